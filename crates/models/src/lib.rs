//! edgellama-models
