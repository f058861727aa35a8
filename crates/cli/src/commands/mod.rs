pub mod bench;
pub mod inspect;
pub mod perplexity;
pub mod run;
pub mod tokenize;
