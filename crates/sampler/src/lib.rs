//! edgellama-sampler
