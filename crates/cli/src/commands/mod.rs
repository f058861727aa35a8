pub mod bench;
pub mod inspect;
pub mod perplexity;
pub mod quantize;
pub mod run;
pub mod template;
pub mod tokenize;
