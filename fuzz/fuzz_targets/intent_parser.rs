//! Torn, hostile or random `.lanspread.json` content: decoding never
//! panics, and whatever decodes re-encodes to something that decodes to the
//! same intent.
#![no_main]

use lanspread_core::txn::Intent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(intent) = Intent::decode(data) {
        let again = Intent::decode(&intent.encode()).expect("an encoded intent decodes");
        assert_eq!(again, intent);
    }
});
