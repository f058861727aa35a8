//! edgellama-engine
