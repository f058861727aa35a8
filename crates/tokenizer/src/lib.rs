//! edgellama-tokenizer
