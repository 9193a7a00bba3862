#![forbid(unsafe_code)]
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

use l4lb::control::config::Config;

/// l4lb: a userspace L4 load balancer on DPDK.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start EAL and the ports from a configuration and forward until Ctrl-C/SIGTERM.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration without touching DPDK (exit 2 when it is wrong).
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Replay a pcap through the balancing pipeline (no DPDK) and write what
    /// would leave the box; prints the verdict counts.
    Simulate {
        #[arg(short, long)]
        config: PathBuf,
        /// Input capture (Ethernet), as received by l4lb.
        #[arg(long = "in")]
        input: PathBuf,
        /// Output capture: forwarded packets and replies.
        #[arg(long = "out")]
        output: PathBuf,
        /// The port (by name) the packets arrive on; default: the first.
        #[arg(long)]
        port: Option<String>,
        /// Print one line per packet: index and verdict.
        #[arg(long)]
        trace: bool,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { config } => match Config::load(&config) {
            Ok(v) => {
                println!(
                    "{}: OK ({} ports, {} workers, main lcore {})",
                    config.display(),
                    v.config.ports.len(),
                    v.workers.len(),
                    v.main_lcore
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Simulate { config, input, output, port, trace } => {
            let cfg = match Config::load(&config) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let in_port = match port {
                None => 0,
                Some(name) => match cfg.config.ports.iter().position(|p| p.name == name) {
                    Some(i) => i as u16,
                    None => {
                        eprintln!("error: --port {name}: no such port in {}", config.display());
                        return ExitCode::from(2);
                    }
                },
            };
            let mut stdout = std::io::stdout();
            let tr: Option<&mut dyn std::io::Write> = if trace { Some(&mut stdout) } else { None };
            match l4lb::simulate::run(&cfg, &input, &output, in_port, tr) {
                Ok(c) => {
                    l4lb::simulate::report(&c, &mut std::io::stdout());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            // First Ctrl-C/SIGTERM: stop cleanly. Second: leave at once.
            if let Err(e) = ctrlc::set_handler(|| {
                if STOP.swap(true, Ordering::SeqCst) {
                    eprintln!("l4lb: second signal, exiting now");
                    std::process::exit(130);
                }
                eprintln!("l4lb: stopping (send the signal again to exit at once)");
            }) {
                eprintln!("error: cannot install the signal handler: {e}");
                return ExitCode::FAILURE;
            }
            let mut out = std::io::stdout();
            match l4lb::app::run(&cfg, &STOP, &mut out) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
