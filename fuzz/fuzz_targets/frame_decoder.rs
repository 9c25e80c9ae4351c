//! Hostile bytes into the stream decoder: never a panic, never an
//! allocation beyond the frame limit.
#![no_main]

use lanspread_core::protocol::{Decoded, Request, Response, StreamStartDecoder, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let step = data.first().map_or(1, |b| usize::from(*b % 32) + 1);
    let mut req = StreamStartDecoder::new(MAX_REQUEST_FRAME);
    for piece in data.chunks(step) {
        match req.push::<Request>(piece) {
            Ok(Decoded::NeedMore) => continue,
            _ => break,
        }
    }
    let mut resp = StreamStartDecoder::new(MAX_RESPONSE_FRAME);
    let _ = resp.push::<Response>(data);
    // And with a valid header in front, to reach the payload decoder.
    let mut framed = lanspread_core::protocol::header().to_vec();
    framed.extend_from_slice(&(data.len() as u32).to_be_bytes());
    framed.extend_from_slice(data);
    let _ = StreamStartDecoder::new(MAX_REQUEST_FRAME).push::<Request>(&framed);
    let _ = StreamStartDecoder::new(MAX_RESPONSE_FRAME).push::<Response>(&framed);
});
