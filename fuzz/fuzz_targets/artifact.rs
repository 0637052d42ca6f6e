#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| qgc_fuzz::one("artifact", data));
