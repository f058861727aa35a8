use super::*;

const LAYOUT: KvLayout = KvLayout {
    n_layer: 2,
    n_head_kv: 2,
    head_dim: 32,
};

fn pool(ty: KvType, n_positions: usize) -> Arc<KvPool> {
    KvPool::new(
        LAYOUT,
        KvConfig {
            type_k: ty,
            type_v: ty,
            n_positions,
            block_size: 16,
        },
    )
    .unwrap()
}

fn rows(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..n * LAYOUT.width())
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) * 4.0 - 2.0
        })
        .collect()
}

/// Head `h` of position `p`, widened with the half crate or by hand:
/// independent of the kernels that stored it.
fn read_float(r: &Rows<'_>, p: usize, h: usize) -> Vec<f32> {
    let b = r.head(p, h);
    match r.ty {
        KvType::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        KvType::F16 => r
            .head_u16(p, h)
            .iter()
            .map(|&x| half::f16::from_bits(x).to_f32())
            .collect(),
        KvType::Bf16 => r
            .head_u16(p, h)
            .iter()
            .map(|&x| half::bf16::from_bits(x).to_f32())
            .collect(),
        _ => unreachable!(),
    }
}

#[test]
fn names_parse_as_llama_cpp_spells_them() {
    for t in KvType::ALL {
        assert_eq!(t.name().parse::<KvType>().unwrap(), t);
    }
    assert_eq!("Q8_0".parse::<KvType>().unwrap(), KvType::Q8_0);
    let e = "q3_k".parse::<KvType>().unwrap_err().to_string();
    assert!(e.contains("q3_k") && e.contains("iq4_nl"), "{e}");
}

#[test]
fn float_types_store_exactly_or_rounded_once() {
    for ty in [KvType::F32, KvType::F16, KvType::Bf16] {
        let p = pool(ty, 64);
        let mut s = KvSeq::new(p.clone(), 64);
        s.reserve(20).unwrap();
        let (k, v) = (rows(20, 1), rows(20, 2));
        s.store(1, 0, &k, &v).unwrap();
        let (rk, rv) = (s.rows(1, Kind::K), s.rows(1, Kind::V));
        for pos in [0, 15, 16, 19] {
            for h in 0..2 {
                let at = pos * LAYOUT.width() + h * 32;
                for (got, want) in [(read_float(&rk, pos, h), &k), (read_float(&rv, pos, h), &v)] {
                    for (d, &g) in got.iter().enumerate() {
                        let w = want[at + d];
                        let expect = match ty {
                            KvType::F32 => w,
                            KvType::F16 => half::f16::from_f32(w).to_f32(),
                            _ => half::bf16::from_f32(w).to_f32(),
                        };
                        assert_eq!(g, expect, "{ty} pos {pos} head {h} dim {d}");
                    }
                }
            }
        }
        // Layer 0 was not written.
        assert!(read_float(&s.rows(0, Kind::K), 3, 1)
            .iter()
            .all(|&x| x == 0.0));
    }
}

#[test]
fn quantized_rows_keep_each_value_within_a_step_of_its_block() {
    for ty in [
        KvType::Q8_0,
        KvType::Q4_0,
        KvType::Q4_1,
        KvType::Q5_0,
        KvType::Q5_1,
        KvType::Iq4Nl,
    ] {
        let p = pool(ty, 32);
        let mut s = KvSeq::new(p, 32);
        s.reserve(3).unwrap();
        let k = rows(3, 7);
        s.store(0, 0, &k, &k).unwrap();
        let r = s.rows(0, Kind::K);
        let deq = ty.kernels().unwrap().dequantize;
        // Steps of the formats: 8-bit 1/127 of the block's largest value,
        // 5-bit 1/15, 4-bit 1/7 (iq4_nl's widest gap is 24/127).
        let step = match ty {
            KvType::Q8_0 => 1.0 / 127.0,
            KvType::Q5_0 | KvType::Q5_1 => 1.0 / 15.0,
            KvType::Iq4Nl => 24.0 / 127.0,
            _ => 1.0 / 7.0,
        };
        for pos in 0..3 {
            for h in 0..2 {
                let mut out = vec![0f32; 32];
                deq(r.head(pos, h), &mut out);
                let want = &k[pos * 64 + h * 32..][..32];
                let amax = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                for (g, w) in out.iter().zip(want) {
                    assert!((g - w).abs() <= amax * step * 1.01, "{ty}: {g} for {w}");
                }
            }
        }
    }
}

#[test]
fn blocks_are_taken_as_sequences_grow_and_given_back() {
    let p = pool(KvType::F16, 64);
    assert_eq!((p.n_blocks(), p.block_size()), (4, 16));
    let mut a = KvSeq::new(p.clone(), 64);
    a.reserve(17).unwrap();
    assert_eq!((a.n_blocks(), a.capacity(), p.blocks_in_use()), (2, 32, 2));
    a.reserve(10).unwrap();
    assert_eq!(p.blocks_in_use(), 2);
    let mut b = KvSeq::new(p.clone(), 64);
    let e = b.reserve(48).unwrap_err();
    assert!(
        matches!(
            e,
            KvError::PoolFull {
                need: 3,
                free: 2,
                total: 4,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(b.n_blocks(), 0, "a failed reserve takes nothing");
    b.reserve(32).unwrap();
    a.truncate(5);
    assert_eq!(p.blocks_in_use(), 3);
    drop(b);
    assert_eq!(p.blocks_in_use(), 1);
    assert_eq!(p.peak_blocks(), 4);
    let e = a.reserve(65).unwrap_err();
    assert_eq!(e, KvError::SequenceFull { want: 65, max: 64 });
}

#[test]
fn shared_blocks_are_copied_on_write() {
    let p = pool(KvType::F32, 64);
    let mut a = KvSeq::new(p.clone(), 64);
    a.reserve(24).unwrap();
    let (k, v) = (rows(24, 3), rows(24, 4));
    a.store(0, 0, &k, &v).unwrap();
    let mut b = KvSeq::new(p.clone(), 64);
    b.share_prefix(&a, 20).unwrap();
    assert_eq!((b.n_blocks(), p.blocks_in_use()), (2, 2));
    // b writes position 20, inside the shared second block: it gets its
    // own copy, and a's row 20 stays.
    b.reserve(21).unwrap();
    let (k2, v2) = (rows(1, 5), rows(1, 6));
    b.store(0, 20, &k2, &v2).unwrap();
    assert_eq!(p.blocks_in_use(), 3);
    let at20 = |s: &KvSeq| read_float(&s.rows(0, Kind::K), 20, 1);
    assert_eq!(at20(&a), k[20 * 64 + 32..21 * 64]);
    assert_eq!(at20(&b), k2[32..64]);
    // The copy kept the shared positions before 20.
    assert_eq!(
        read_float(&b.rows(0, Kind::V), 19, 0),
        v[19 * 64..19 * 64 + 32]
    );
    // The first block is still one block for both.
    let f = a.fork();
    assert_eq!(p.blocks_in_use(), 3);
    drop((a, f));
    assert_eq!(p.blocks_in_use(), 2);
    let other = pool(KvType::F32, 64);
    let mut c = KvSeq::new(other, 64);
    assert_eq!(c.share_prefix(&b, 4), Err(KvError::OtherPool));
}

#[test]
fn a_full_pool_refuses_a_copy_on_write() {
    let p = pool(KvType::F16, 32);
    let mut a = KvSeq::new(p.clone(), 32);
    a.reserve(32).unwrap();
    let mut b = KvSeq::new(p.clone(), 32);
    b.share_prefix(&a, 32).unwrap();
    let k = rows(1, 9);
    assert!(matches!(
        b.store(0, 3, &k, &k),
        Err(KvError::PoolFull { .. })
    ));
}

#[test]
fn bad_settings_are_refused() {
    let cfg = |ty, bs| KvConfig {
        type_k: KvType::F16,
        type_v: ty,
        n_positions: 64,
        block_size: bs,
    };
    let narrow = KvLayout {
        head_dim: 16,
        ..LAYOUT
    };
    let e = KvPool::new(narrow, cfg(KvType::Q8_0, 16)).unwrap_err();
    assert!(
        matches!(
            e,
            KvError::HeadDim {
                block: 32,
                head_dim: 16,
                ..
            }
        ),
        "{e}"
    );
    KvPool::new(narrow, cfg(KvType::Bf16, 16)).unwrap();
    for bs in [0, 8, 24, 8192] {
        assert_eq!(
            KvPool::new(LAYOUT, cfg(KvType::F16, bs)).unwrap_err(),
            KvError::BlockSize(bs)
        );
    }
    let p = pool(KvType::F16, 64);
    let mut s = KvSeq::new(p, 64);
    s.reserve(2).unwrap();
    assert!(matches!(
        s.store(0, 0, &[0.0; 63], &[0.0; 63]),
        Err(KvError::RowWidth { .. })
    ));
    assert!(matches!(
        s.store(0, 16, &[0.0; 64], &[0.0; 64]),
        Err(KvError::SequenceFull { .. })
    ));
}
