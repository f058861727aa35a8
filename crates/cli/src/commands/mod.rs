pub mod bench;
pub mod inspect;
pub mod perplexity;
pub mod quantize;
pub mod run;
pub mod serve;
pub mod template;
pub mod tokenize;
