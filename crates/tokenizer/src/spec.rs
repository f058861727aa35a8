//! The plain description of a vocabulary that both loaders fill in.

use crate::pretok::PreTokenizer;

/// A token's type, numbered as GGUF's `tokenizer.ggml.token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    Undefined = 0,
    /// A BPE piece, stored in byte-level form (`"Ġthe"`).
    Normal = 1,
    Unknown = 2,
    /// A special token (`<|eot_id|>`): matched in text only when asked,
    /// decoded to its text only when asked. Stored as raw text.
    Control = 3,
    /// An added token that is always matched in text and always decoded.
    /// Stored as raw text.
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl TokenType {
    /// The type for a GGUF code; unknown codes are `Undefined`, as in llama.cpp.
    pub fn from_gguf(code: i32) -> Self {
        match code {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }

    /// Tokens cut out of the text before pre-tokenization.
    pub(crate) fn is_added(self) -> bool {
        matches!(
            self,
            TokenType::Control | TokenType::UserDefined | TokenType::Unknown
        )
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecToken {
    pub text: String,
    pub kind: TokenType,
    /// An added token that swallows whitespace on its left / right when
    /// matched (Hugging Face `lstrip` / `rstrip`).
    pub lstrip: bool,
    pub rstrip: bool,
}

impl SpecToken {
    pub fn new(text: impl Into<String>, kind: TokenType) -> Self {
        SpecToken {
            text: text.into(),
            kind,
            lstrip: false,
            rstrip: false,
        }
    }
}

/// Ids of the tokens with a role. `None` when the vocabulary has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// End of turn (`<|eot_id|>`); found by text when not given.
    pub eot: Option<u32>,
    /// End of message with a tool call pending (`<|eom_id|>`); found by text when not given.
    pub eom: Option<u32>,
    pub pad: Option<u32>,
    pub unk: Option<u32>,
}

/// Everything needed to build a [`crate::Tokenizer`].
#[derive(Debug, Clone)]
pub struct TokenizerSpec {
    /// Indexed by token id.
    pub tokens: Vec<SpecToken>,
    /// Merge rules, highest priority first, as pairs of vocabulary strings.
    pub merges: Vec<(String, String)>,
    pub pre: PreTokenizer,
    /// A word that is itself a token is emitted whole, without merging
    /// (Llama 3; Hugging Face `ignore_merges`).
    pub ignore_merges: bool,
    pub special: SpecialIds,
    /// Whether `encode(.., add_special = true, ..)` prepends BOS / appends EOS.
    pub add_bos: bool,
    pub add_eos: bool,
}
