//! edgellama-kernels
