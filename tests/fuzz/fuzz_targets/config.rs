//! `l4lb check` on arbitrary configuration text. (l4lb::fuzz::config)
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| l4lb::fuzz::config(data));
