//! The actix-web example server: `cargo run -p ssehub-actix` (then `curl -N localhost:8081/events/<uuid>`).

use std::net::TcpListener;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:8081")?;
    println!("ssehub actix example listening on http://{}/", listener.local_addr()?);
    ssehub_actix::server(listener, ssehub_actix::Hub::new())?.await
}
