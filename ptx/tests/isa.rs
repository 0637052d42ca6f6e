//! Instruction semantics on hand-written PTX against values worked out by hand (PTX ISA 9.0):
//! directed rounding, float→int conversion rules, NaN rules, integer widths, bit fields, bf16
//! packing, vector and local memory, and an inline-asm scope with its own registers.

use qgc_ptx::{Interp, Options};

/// Runs a one-thread kernel `k(u32* out)` whose body is `body`, returning `n` words of `out`.
fn run(regs: &str, body: &str, n: usize) -> Vec<u32> {
    let ptx = format!(
        ".version 9.0\n.target sm_90\n.address_size 64\n\n.visible .entry k(\n\t.param .u64 k_param_0\n)\n{{\n{regs}\n\
         \t.reg .b64 %out;\n\tld.param.u64 %out, [k_param_0];\n\tcvta.to.global.u64 %out, %out;\n{body}\n\tret;\n}}\n"
    );
    let mut d = Interp::new(Options::default());
    let m = d.load("isa", &ptx).unwrap_or_else(|e| panic!("{e}\n{ptx}"));
    let out = d.alloc(4 * n);
    d.launch(m, "k", (1, 1, 1), (1, 1, 1), 0, &[out.to_le_bytes().to_vec()]).unwrap_or_else(|e| panic!("{e}"));
    let mut b = vec![0u8; 4 * n];
    d.read(out, &mut b).unwrap();
    b.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn f(x: f32) -> u32 {
    x.to_bits()
}

#[test]
fn directed_rounding() {
    // 1 + 2^-24 is not an f32: rn → 1 (tie to even), rm → 1, rp → 1 + 2^-23, rz → 1.
    // -(1 + 2^-24): rm → -(1 + 2^-23), rz → -1.
    let body =
        "\tmov.f32 %a, 0f3F800000;\n\tmov.f32 %b, 0f33800000;\n\tmov.f32 %c, 0fBF800000;\n\tmov.f32 %e, 0fB3800000;\n\
        \tadd.rn.f32 %r, %a, %b;\n\tst.global.f32 [%out], %r;\n\
        \tadd.rm.f32 %r, %a, %b;\n\tst.global.f32 [%out+4], %r;\n\
        \tadd.rp.f32 %r, %a, %b;\n\tst.global.f32 [%out+8], %r;\n\
        \tadd.rz.f32 %r, %a, %b;\n\tst.global.f32 [%out+12], %r;\n\
        \tadd.rm.f32 %r, %c, %e;\n\tst.global.f32 [%out+16], %r;\n\
        \tadd.rz.f32 %r, %c, %e;\n\tst.global.f32 [%out+20], %r;\n\
        \tfma.rp.f32 %r, %b, %b, %a;\n\tst.global.f32 [%out+24], %r;\n\
        \tfma.rm.f32 %r, %b, %b, %a;\n\tst.global.f32 [%out+28], %r;";
    let o = run("\t.reg .f32 %a, %b, %c, %e, %r;", body, 8);
    let up = 1.0f32.next_up();
    assert_eq!(o, vec![f(1.0), f(1.0), f(up), f(1.0), f(-up), f(-1.0), f(up), f(1.0)]);
}

#[test]
fn float_to_int_and_saturation() {
    // cvt.rni/rzi/rmi/rpi of 2.5 and -2.5; NaN → 0; 3e9 saturates to i32::MAX; cvt.sat.f32 of
    // 1.5 → 1 and of NaN → 0; cvt.rni.f32.f32 of 3.5 → 4 (float result).
    let body = "\tmov.f32 %a, 0f40200000;\n\tmov.f32 %b, 0fC0200000;\n\tmov.f32 %n, 0f7FC00000;\n\tmov.f32 %g, 0f4F32D05E;\n\
        \tcvt.rni.s32.f32 %i, %a;\n\tst.global.u32 [%out], %i;\n\tcvt.rni.s32.f32 %i, %b;\n\tst.global.u32 [%out+4], %i;\n\
        \tcvt.rzi.s32.f32 %i, %b;\n\tst.global.u32 [%out+8], %i;\n\tcvt.rmi.s32.f32 %i, %a;\n\tst.global.u32 [%out+12], %i;\n\
        \tcvt.rpi.s32.f32 %i, %b;\n\tst.global.u32 [%out+16], %i;\n\tcvt.rzi.s32.f32 %i, %n;\n\tst.global.u32 [%out+20], %i;\n\
        \tcvt.rzi.s32.f32 %i, %g;\n\tst.global.u32 [%out+24], %i;\n\
        \tmov.f32 %a, 0f3FC00000;\n\tcvt.sat.f32.f32 %r, %a;\n\tst.global.f32 [%out+28], %r;\n\
        \tcvt.sat.f32.f32 %r, %n;\n\tst.global.f32 [%out+32], %r;\n\
        \tmov.f32 %a, 0f40600000;\n\tcvt.rni.f32.f32 %r, %a;\n\tst.global.f32 [%out+36], %r;";
    let o = run("\t.reg .f32 %a, %b, %n, %g, %r;\n\t.reg .b32 %i;", body, 10);
    let w: Vec<u32> = [2, -2, -2, 2, -2, 0, i32::MAX].iter().map(|&x: &i32| x as u32).collect();
    assert_eq!(&o[..7], &w[..]);
    assert_eq!(&o[7..], &[f(1.0), f(0.0), f(4.0)]);
}

#[test]
fn nan_rules() {
    // max.f32(NaN, 1) = 1; setp.lt NaN false; setp.ltu NaN true; setp.num; selp picks by p.
    let body =
        "\tmov.f32 %n, 0f7FC00000;\n\tmov.f32 %a, 0f3F800000;\n\tmax.f32 %r, %n, %a;\n\tst.global.f32 [%out], %r;\n\
        \tsetp.lt.f32 %p, %n, %a;\n\tselp.u32 %i, 1, 0, %p;\n\tst.global.u32 [%out+4], %i;\n\
        \tsetp.ltu.f32 %p, %n, %a;\n\tselp.u32 %i, 1, 0, %p;\n\tst.global.u32 [%out+8], %i;\n\
        \tsetp.num.f32 %p|%q, %n, %a;\n\tselp.u32 %i, 1, 0, %q;\n\tst.global.u32 [%out+12], %i;";
    let o = run("\t.reg .f32 %a, %n, %r;\n\t.reg .b32 %i;\n\t.reg .pred %p, %q;", body, 4);
    assert_eq!(o, vec![f(1.0), 0, 1, 1]);
}

#[test]
fn integer_widths_and_bit_fields() {
    // mul.wide.s32 -3 · 2^30 = -3·2^30 (64-bit; low word 0x40000000, high 0xffffffff);
    // mul.hi.u32 0xffffffff² = 0xfffffffe; shr.s32 -16 >> 2 = -4; shr.u32 = 0x3ffffffc;
    // shl by 40 = 0; bfe.s32 of 0x0000f000 at 12, len 4 = -1; bfe.u32 = 15;
    // bfi 0xab into 0x12345678 at 8, len 8 = 0x1234ab78; prmt 0x3210 identity, 0x0123 reversal;
    // shf.l.wrap of (lo 0x80000000, hi 1) by 1 = 3.
    let body = "\tmov.u32 %a, -3;\n\tmov.u32 %b, 1073741824;\n\tmul.wide.s32 %w, %a, %b;\n\tst.global.u64 [%out], %w;\n\
        \tmov.u32 %a, -1;\n\tmul.hi.u32 %c, %a, %a;\n\tst.global.u32 [%out+8], %c;\n\
        \tmov.u32 %a, -16;\n\tshr.s32 %c, %a, 2;\n\tst.global.u32 [%out+12], %c;\n\tshr.u32 %c, %a, 2;\n\tst.global.u32 [%out+16], %c;\n\
        \tshl.b32 %c, %a, 40;\n\tst.global.u32 [%out+20], %c;\n\
        \tmov.u32 %a, 61440;\n\tbfe.s32 %c, %a, 12, 4;\n\tst.global.u32 [%out+24], %c;\n\tbfe.u32 %c, %a, 12, 4;\n\tst.global.u32 [%out+28], %c;\n\
        \tmov.u32 %a, 171;\n\tmov.u32 %b, 305419896;\n\tbfi.b32 %c, %a, %b, 8, 8;\n\tst.global.u32 [%out+32], %c;\n\
        \tprmt.b32 %c, %b, %a, 12816;\n\tst.global.u32 [%out+36], %c;\n\tprmt.b32 %c, %b, %a, 291;\n\tst.global.u32 [%out+40], %c;\n\
        \tmov.u32 %a, -2147483648;\n\tmov.u32 %b, 1;\n\tshf.l.wrap.b32 %c, %a, %b, 1;\n\tst.global.u32 [%out+44], %c;";
    let o = run("\t.reg .b32 %a, %b, %c;\n\t.reg .b64 %w;", body, 12);
    assert_eq!(o[0], 0x4000_0000);
    assert_eq!(o[1], 0xffff_ffff);
    assert_eq!(
        o[2..],
        [0xffff_fffe, (-4i32) as u32, 0x3fff_fffc, 0, u32::MAX, 15, 0x1234_ab78, 0x1234_5678, 0x7856_3412, 3]
    );
}

#[test]
fn bf16_vectors_local_memory_and_asm_scopes() {
    // cvt.rn.bf16x2.f32 d, a, b puts a in the upper half; mov.b32 {lo, hi} unpacks low first;
    // ld.global.v4 / st.local / ld.local round trip; an inline-asm scope declares its own %t.
    let body = "\tmov.f32 %a, 0f3F800000;\n\tmov.f32 %b, 0fC0000000;\n\tcvt.rn.bf16x2.f32 %c, %a, %b;\n\tst.global.u32 [%out], %c;\n\
        \tmov.b32 {%lo, %hi}, %c;\n\tcvt.u32.u16 %d, %lo;\n\tst.global.u32 [%out+4], %d;\n\
        \tcvt.f32.bf16 %r, %hi;\n\tst.global.f32 [%out+8], %r;\n\
        \tmov.u64 %l, __local_depot0;\n\tst.local.u32 [%l+4], %c;\n\tld.local.u32 %d, [%l+4];\n\tst.global.u32 [%out+12], %d;\n\
        \t{\n\t.reg .b32 %t;\n\tadd.s32 %t, %d, 1;\n\tst.global.u32 [%out+16], %t;\n\t}\n\
        \tld.global.v4.u32 {%a4, %b4, %c4, %d4}, [%out];\n\tst.global.v2.u32 [%out+24], {%b4, %c4};";
    let regs = "\t.local .align 8 .b8 __local_depot0[16];\n\t.reg .f32 %a, %b, %r;\n\t.reg .b32 %c, %d, %a4, %b4, %c4, %d4;\n\t.reg .b16 %lo, %hi;\n\t.reg .b64 %l;";
    let o = run(regs, body, 8);
    let packed = (0x3f80u32 << 16) | 0xc000;
    assert_eq!(o[0], packed);
    assert_eq!(o[1], 0xc000);
    assert_eq!(o[2], f(1.0));
    assert_eq!(o[3], packed);
    assert_eq!(o[4], packed + 1);
    assert_eq!(&o[6..8], &[0xc000, f(1.0)]);
}

#[test]
fn a_parse_error_names_the_line() {
    let mut d = Interp::new(Options::default());
    let e =
        d.load("bad", ".version 9.0\n.target sm_90\n.visible .entry k()\n{\n\tfrobnicate.b32 %r1;\n}\n").unwrap_err();
    assert_eq!(e.to_string(), "PTX line 5: unsupported instruction frobnicate in `frobnicate.b32 %r1`");
}
