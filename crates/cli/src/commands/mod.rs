pub mod bench;
pub mod inspect;
pub mod perplexity;
pub mod run;
pub mod template;
pub mod tokenize;
