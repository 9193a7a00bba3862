//! Every packet view, then the fast paths against the general parser. (l4lb::fuzz::parsers)
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| l4lb::fuzz::parsers(data));
