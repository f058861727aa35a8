//! edgellama-backend
