//! The SSE frame of an event as the text/event-stream format defines it, written here from the format's rules rather than by the encoder under test.

use ssehub::fixture::ExampleCategory as C;
use ssehub::{Category as _, Event};

/// `id:`, `event:`, one `data:` line per line of the data (CRLF, CR and LF each end a line), a blank line.
pub fn frame_of(event: &Event<C>) -> String {
    let mut frame = format!("id: {}\nevent: {}\n", event.id(), event.event_type());
    for line in event.data().replace("\r\n", "\n").replace('\r', "\n").split('\n') {
        frame.push_str("data: ");
        frame.push_str(line);
        frame.push('\n');
    }
    frame.push('\n');
    frame
}

#[test]
fn a_frame_is_written_by_the_format_rules() {
    let event = Event::new(ssehub::Audience::Broadcast, "a.b", C::ALL[0], "[1,\r\n2,\r3,\n4]").unwrap();
    assert_eq!(
        frame_of(&event),
        format!("id: {}\nevent: a.b\ndata: [1,\ndata: 2,\ndata: 3,\ndata: 4]\n\n", event.id())
    );
}
