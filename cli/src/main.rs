//! `p2pchat`: the registry server, the interactive client and scriptable commands,
//! over the p2pcore library.

mod args;
mod client;
mod failure;
mod keys;
mod notice;
mod output;
mod progress;
mod relay;
mod scripted;
mod server;
mod signals;
mod style;
mod visible;

use args::{Cli, Command};
use clap::Parser;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(a) => server::run(&a),
        Command::Client(a) => client::run(a),
        Command::Users(a) => scripted::users(&a),
        Command::Files(a) => scripted::files(&a),
        Command::Whois(a) => scripted::whois(&a),
        Command::Share(a) => scripted::share(&a),
        Command::Fetch(a) => scripted::fetch(&a),
        Command::Send(a) => scripted::send(&a),
        Command::Id(a) => keys::id(&a),
        Command::Trust(a) => keys::trust(&a),
        Command::Relay(a) => relay::run(&a),
    };
    if let Err(f) = result {
        // Error texts carry what peers and the registry said: never raw. An empty one
        // is a failure already explained (an interrupted `share` or `server`).
        if !f.message.is_empty() {
            output::err_line(&format!("p2pchat: {}", visible::visible(&f.message)));
        }
        std::process::exit(f.code);
    }
}
