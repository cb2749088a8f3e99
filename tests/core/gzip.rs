//! Tests of `ssehub::gzip`: every chunk decodes as soon as it arrives, streams sharing a thread's compressor stay apart, the history pays.

use crate::frames::frame_of;
use std::io::Write;

use bytes::Bytes;
use flate2::write::GzDecoder;
use futures::executor::block_on;
use futures::{Stream, StreamExt, stream};
use ssehub::fixture::ExampleCategory as C;
use ssehub::gzip::GzipStream;
use ssehub::{Audience, Category, Event};

/// Events shaped like the demo's: a category's event type, a small JSON object.
fn demo_like_events(count: u64) -> Vec<Event<C>> {
    (0..count)
        .map(|n| {
            let category = C::ALL[(n % 6) as usize];
            let data = format!(
                r#"{{"n":{n},"to":"everyone","message":"Import #{}: {}% done"}}"#,
                1 + n / 6,
                (n * 7) % 101
            );
            Event::new(Audience::Broadcast, &format!("{}.updated", category.name()), category, data).unwrap()
        })
        .collect()
}

/// The chunks of `body`, polled until it ends.
fn chunks<S: Stream<Item = Bytes> + Unpin>(body: S) -> Vec<Bytes> {
    block_on(body.collect())
}

/// The plain chunks a live `SseStream` sends for `events` published one by one: the
/// `retry:` frame, then one frame each.
fn plain_chunks(events: &[Event<C>]) -> Vec<Bytes> {
    let mut out = vec![Bytes::from_static(b"retry: 3000\n\n")];
    for event in events {
        out.push(Bytes::from(frame_of(event)));
    }
    out
}

#[test]
fn every_chunk_decodes_as_soon_as_it_arrives() {
    let events = demo_like_events(200);
    let plain = plain_chunks(&events);
    let compressed = chunks(GzipStream::new(stream::iter(plain.clone())));
    assert_eq!(compressed.len(), plain.len() + 1, "one chunk per chunk, then the trailer");

    // A decoder fed chunk by chunk has, after each, exactly the plain text so far: nothing is
    // held back for a later chunk (what lets a browser show each event at once).
    let mut decoder = GzDecoder::new(Vec::new());
    let mut expected = Vec::new();
    for (chunk, plain) in compressed.iter().zip(&plain) {
        decoder.write_all(chunk).unwrap();
        decoder.flush().unwrap();
        expected.extend_from_slice(plain);
        assert_eq!(decoder.get_ref(), &expected, "after {} bytes of plain text", expected.len());
    }
    // The trailer closes the member: the CRC and length check out.
    decoder.write_all(compressed.last().unwrap()).unwrap();
    assert_eq!(decoder.finish().unwrap(), expected);
}

#[test]
fn the_history_makes_frames_smaller_than_compressing_each_alone() {
    let events = demo_like_events(300);
    let plain = plain_chunks(&events);
    let plain_bytes: usize = plain.iter().map(Bytes::len).sum();
    let with_history: usize =
        chunks(GzipStream::new(stream::iter(plain.clone()))).iter().map(Bytes::len).sum();
    let alone: usize =
        chunks(GzipStream::with_settings(stream::iter(plain), 6, 0)).iter().map(Bytes::len).sum();
    eprintln!("plain {plain_bytes} B, each chunk alone {alone} B, with 2 KiB of history {with_history} B");
    assert!(with_history * 2 < plain_bytes, "the history halves the bytes at least");
    assert!(with_history < alone, "and beats compressing each chunk alone");
}

#[test]
fn streams_polled_in_turn_on_one_thread_stay_apart() {
    // One compressor per thread serves every stream: each must still compress against its own
    // history, whatever was compressed for another stream in between.
    let first = plain_chunks(&demo_like_events(60));
    let second: Vec<Bytes> =
        (0..60).map(|n| Bytes::from(format!(": comment {n}\n\ndata: [{n}]\n\n"))).collect();
    let mut a = GzipStream::new(stream::iter(first.clone()));
    let mut b = GzipStream::with_settings(stream::iter(second.clone()), 1, 40);
    let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
    loop {
        let (next_a, next_b) = (block_on(a.next()), block_on(b.next()));
        if next_a.is_none() && next_b.is_none() {
            break;
        }
        out_a.extend(next_a);
        out_b.extend(next_b);
    }
    for (compressed, plain) in [(out_a, first), (out_b, second)] {
        let mut decoder = GzDecoder::new(Vec::new());
        decoder.write_all(&compressed.concat()).unwrap();
        assert_eq!(decoder.finish().unwrap(), plain.concat());
    }
}

#[test]
fn an_empty_body_is_a_valid_empty_gzip_member() {
    let compressed = chunks(GzipStream::new(stream::empty::<Bytes>()));
    let mut decoder = GzDecoder::new(Vec::new());
    decoder.write_all(&compressed.concat()).unwrap();
    assert_eq!(decoder.finish().unwrap(), b"");
}

/// With the `http` feature a gzip body is an `http_body::Body`: its frames are the stream's chunks.
#[test]
fn a_gzip_body_is_an_http_body_whose_frames_decode_to_the_sse_frames() {
    use http_body_util::BodyExt;

    let events = demo_like_events(3);
    let sse = ssehub::sse::SseStream::new(stream::iter(events.clone().into_iter().map(Ok)));
    let mut body = GzipStream::new(sse);
    let mut decoder = GzDecoder::new(Vec::new());
    block_on(async {
        while let Some(frame) = body.frame().await {
            decoder.write_all(&frame.unwrap().into_data().unwrap()).unwrap();
        }
    });
    let text = String::from_utf8(decoder.finish().unwrap()).unwrap();
    let expected: String =
        std::iter::once("retry: 3000\n\n".to_owned()).chain(events.iter().map(frame_of)).collect();
    assert_eq!(text, expected);
}
