//! GPT-2's reversible byte <-> printable-char mapping, so that every byte
//! sequence can be stored as a vocabulary string without spaces or control
//! characters (`' '` becomes `'Ġ'`, `'\n'` becomes `'Ċ'`).

/// The char that stands for `byte` in byte-level vocabularies.
pub const fn byte_to_char(byte: u8) -> char {
    let b = byte as u32;
    let printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
    if printable {
        // Every value below 256 is a valid scalar value: the fallback never runs.
        match char::from_u32(b) {
            Some(c) => c,
            None => '\u{fffd}',
        }
    } else {
        // The non-printable bytes are numbered in order and shifted past 255.
        let mut n = 0u32;
        let mut i = 0u32;
        while i < b {
            let p = (i >= 0x21 && i <= 0x7e) || (i >= 0xa1 && i <= 0xac) || (i >= 0xae);
            if !p {
                n += 1;
            }
            i += 1;
        }
        match char::from_u32(256 + n) {
            Some(c) => c,
            None => '\u{fffd}',
        }
    }
}

const fn build_byte_chars() -> [char; 256] {
    let mut t = ['\0'; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = byte_to_char(i as u8);
        i += 1;
    }
    t
}

/// `BYTE_CHARS[b]` is the char standing for byte `b`.
pub static BYTE_CHARS: [char; 256] = build_byte_chars();

/// The byte a mapped char stands for, if it is one of the 256 mapped chars.
pub fn char_to_byte(c: char) -> Option<u8> {
    let u = c as u32;
    match u {
        0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff => Some(u as u8),
        0x100..=0x143 => {
            // Index among the non-printable bytes, in order.
            let k = (u - 0x100) as usize;
            NON_PRINTABLE.get(k).copied()
        }
        _ => None,
    }
}

const fn build_non_printable() -> [u8; 68] {
    let mut t = [0u8; 68];
    let mut n = 0;
    let mut i = 0u32;
    while i < 256 {
        let p = (i >= 0x21 && i <= 0x7e) || (i >= 0xa1 && i <= 0xac) || (i >= 0xae);
        if !p {
            t[n] = i as u8;
            n += 1;
        }
        i += 1;
    }
    t
}

static NON_PRINTABLE: [u8; 68] = build_non_printable();

/// Appends the byte-level form of `bytes` to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    out.extend(bytes.iter().map(|&b| BYTE_CHARS[b as usize]));
}

/// Raw bytes of a byte-level vocabulary string. A string with a char outside
/// the mapping is returned as its own UTF-8, as Hugging Face's ByteLevel
/// decoder does.
pub fn decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => return text.as_bytes().to_vec(),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_a_bijection_matching_gpt2() {
        // Reference values from GPT-2's bytes_to_unicode().
        assert_eq!(BYTE_CHARS[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_CHARS[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_CHARS[b'\t' as usize], 'ĉ');
        assert_eq!(BYTE_CHARS[0], 'Ā');
        assert_eq!(BYTE_CHARS[0x7f], 'ġ');
        assert_eq!(BYTE_CHARS[0xad], 'Ń');
        assert_eq!(BYTE_CHARS[b'a' as usize], 'a');
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = BYTE_CHARS[b as usize];
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(char_to_byte(' '), None);
        assert_eq!(char_to_byte('\u{144}'), None);
    }

    #[test]
    fn decode_falls_back_to_utf8() {
        assert_eq!(decode("ĠhelloĊ"), b" hello\n");
        assert_eq!(decode("a b"), b"a b");
    }
}
