#![forbid(unsafe_code)]
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
#[cfg(feature = "dpdk")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};

#[cfg(feature = "dpdk")]
use l4lb::app::Signals;
use l4lb::control::api::{Change, Protocol, Request, MAX_WEIGHT};
use l4lb::control::config::{Config, Validated};

/// l4lb: a userspace L4 load balancer on DPDK.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// What the log shows (stderr; one plain line per event, with its time
    /// and level, or a journald priority under systemd).
    #[arg(long, global = true, value_enum, default_value = "info")]
    log_level: LogLevel,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for log::LevelFilter {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    #[cfg(feature = "dpdk")]
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
        /// Print one line per packet: index (worker) and verdict.
        #[arg(long)]
        trace: bool,
        /// Pipelines to spread the packets over, each with its own tables, as
        /// l4lb's workers have.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        workers: u16,
        /// How packets reach the workers: `rss` (a NIC's Toeplitz hash),
        /// `round-robin` (packet by packet) or `random:SEED`.
        #[arg(long, default_value = "rss")]
        assign: l4lb::simulate::Assign,
    },
    /// Write a benchmark pcap: TCP flows to a VIP (scripts/bench/testpmd.sh replays it).
    Gen {
        #[arg(long = "out")]
        output: PathBuf,
        #[arg(long, default_value_t = 1000)]
        flows: u32,
        /// Packets in the file (default: the flow count, at least 4096). Every
        /// flow appears once in each run of `--flows` packets, in a scrambled order.
        #[arg(long)]
        packets: Option<u32>,
        #[arg(long, value_enum, default_value = "established")]
        mix: l4lb::trafficgen::Mix,
        #[arg(long, value_enum, default_value = "64")]
        size: l4lb::trafficgen::Sizes,
        /// The VIP and port (the family of the VIP is the family of the traffic).
        #[arg(long, default_value = "198.18.100.1:80")]
        vip: std::net::SocketAddr,
        /// Destination MAC: l4lb's port (net_pcap ports have 02:70:63:61:70:NN).
        #[arg(long, default_value = "02:70:63:61:70:00")]
        dst_mac: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Segments without data: the frame is the headers padded to the size
        /// (as a client's pure ACK is on the wire).
        #[arg(long)]
        no_payload: bool,
        /// Only part K of N (`--part 1/4`): flows K, K+N, ... (one file per RX queue).
        #[arg(long, default_value = "0/1")]
        part: String,
    },
    #[cfg(feature = "dpdk")]
    /// Send a pcap on one DPDK port at a set rate and count what returns on
    /// another (loss measurements over net_memif; scripts/bench/testpmd.sh).
    Replay {
        #[arg(long)]
        pcap: PathBuf,
        /// The sending port's vdev, e.g. net_memif0,role=server,socket=/tmp/in.sock
        #[arg(long)]
        tx_device: String,
        /// The counting port's vdev.
        #[arg(long)]
        rx_device: String,
        /// Packets per second (default: as fast as the port takes them).
        #[arg(long)]
        rate_pps: Option<u64>,
        /// The measured window.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Traffic before the window (not counted).
        #[arg(long, default_value_t = 1.0)]
        warmup_seconds: f64,
        /// The CPU it runs on, EAL's control threads included (keep it off the
        /// measured program's worker CPUs).
        #[arg(long, default_value_t = 0)]
        cpu: u32,
        #[arg(long, default_value = "l4lb-replay")]
        file_prefix: String,
    },
    /// Print a shell completion script (bash: /usr/share/bash-completion/completions/l4lb).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (l4lb.1 and one per command) into a directory.
    #[command(hide = true)]
    Manpages {
        #[arg(long)]
        out: PathBuf,
    },
    /// Talk to a running l4lb over its control socket.
    Ctl {
        /// The control socket (default: from --config, else /run/l4lb/l4lb.sock).
        #[arg(long, global = true)]
        socket: Option<PathBuf>,
        /// Find the socket from this configuration's [control] / file_prefix.
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        /// Print the raw JSON answer.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        cmd: CtlCmd,
    },
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Version, uptime, ports, generation, reloads.
    Status,
    /// Services with traffic and how many backends are in service.
    Services,
    /// Backends: health, weight, Maglev entries, active flows, rates, check RTT.
    Backends {
        /// Only this service.
        service: Option<String>,
    },
    /// Packet counters, drops by reason, flow table, per worker.
    Stats,
    /// No new flows to BACKEND (ADDRESS or SERVICE/ADDRESS); its flows continue.
    Drain { backend: String },
    /// Undo drain.
    Undrain { backend: String },
    /// Change a backend's weight until the next reload that changes it in the file.
    SetWeight {
        backend: String,
        #[arg(value_parser = clap::value_parser!(u32).range(0..=MAX_WEIGHT as i64))]
        weight: u32,
    },
    /// Re-read the configuration file (refused with the reason if it is wrong).
    Reload,
    /// Which backend a flow gets, and why: `lookup tcp 198.18.0.2:40000 198.18.100.1:80`.
    Lookup {
        #[arg(value_enum)]
        proto: Protocol,
        /// The client's ADDRESS:PORT ([ADDRESS]:PORT for IPv6).
        src: SocketAddr,
        /// The VIP's ADDRESS:PORT.
        dst: SocketAddr,
    },
    /// What would move if BACKEND changed: CHANGE is remove, drain or weight=N.
    Whatif { backend: String, change: Change },
    /// Each VIP's announcement and the BGP sessions (with [bgp]).
    Bgp,
    /// Take this box out of the fleet: mark its routes GRACEFUL_SHUTDOWN,
    /// withdraw them, forward for routing.shutdown_drain_s, then stop (as SIGTERM).
    DrainBox {
        /// Stay up, unannounced, until `undrain-box`.
        #[arg(long)]
        keep_running: bool,
    },
    /// Announce again after `drain-box --keep-running`.
    UndrainBox,
    /// Flow sync with the peer boxes (with [sync]): shared and received flows, each peer.
    Sync,
    /// A live view refreshed every second.
    Top {
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Stop after this many screens.
        #[arg(long)]
        count: Option<u64>,
    },
}

#[cfg(feature = "dpdk")]
static SIGNALS: Signals = Signals { stop: AtomicBool::new(false), reload: AtomicBool::new(false) };

/// SIGINT/SIGTERM stop (a second one exits at once); SIGHUP reloads.
#[cfg(feature = "dpdk")]
fn install_signals() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new().name("l4lb-signals".into()).spawn(move || {
        for sig in signals.forever() {
            if sig == SIGHUP {
                SIGNALS.reload.store(true, Ordering::SeqCst);
                continue;
            }
            if SIGNALS.stop.swap(true, Ordering::SeqCst) {
                log::warn!("second signal, exiting now");
                std::process::exit(130);
            }
            log::info!("stopping (send the signal again to exit at once)");
        }
    })?;
    Ok(())
}

/// How a command failed; the exit code says which kind.
enum Failure {
    /// A configuration or argument that is wrong: exit 2.
    Usage(String),
    /// Something that did not work: exit 1.
    Failed(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    l4lb::logging::init(cli.log_level.into());
    let result = match cli.cmd {
        Cmd::Check { config } => check(&config),
        Cmd::Simulate { config, input, output, port, trace, workers, assign } => {
            simulate(&config, &input, &output, port, trace, workers as usize, assign)
        }
        Cmd::Gen { output, flows, packets, mix, size, vip, dst_mac, seed, no_payload, part } => {
            gen(&output, flows, packets, mix, size, vip, &dst_mac, seed, no_payload, &part)
        }
        #[cfg(feature = "dpdk")]
        Cmd::Replay { pcap, tx_device, rx_device, rate_pps, seconds, warmup_seconds, cpu, file_prefix } => {
            replay(l4lb::replay::ReplayArgs {
                pcap,
                tx_device,
                rx_device,
                rate_pps,
                seconds,
                warmup_seconds,
                cpu,
                file_prefix,
            })
        }
        Cmd::Ctl { socket, config, json, cmd } => ctl(socket, config, json, cmd),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "l4lb", &mut script);
            std::io::stdout().write_all(&script).map_err(|e| Failure::Failed(format!("stdout: {e}")))
        }
        Cmd::Manpages { out } => {
            manpages(&out).map_err(|e| Failure::Failed(format!("{}: {e}", out.display())))
        }
        #[cfg(feature = "dpdk")]
        Cmd::Run { config } => run(&config),
    };
    // Errors become exit codes here, and only here.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `l4lb manpages --out DIR`: `l4lb.1` and a page per command and
/// subcommand (`l4lb-ctl-backends.1`), from the same definitions as `--help`.
fn manpages(out: &Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    fn write(cmd: clap::Command, name: String, out: &Path) -> std::io::Result<()> {
        let cmd = cmd.name(name.clone()).bin_name(name.replace('-', " "));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        std::fs::write(out.join(format!("{name}.1")), page)?;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            write(sub.clone(), format!("{name}-{}", sub.get_name()), out)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(out)?;
    let mut cmd = Cli::command();
    cmd.build();
    write(cmd, "l4lb".into(), out)
}

fn load(config: &Path) -> Result<Validated, Failure> {
    Config::load(config).map_err(|e| Failure::Usage(e.to_string()))
}

/// `l4lb check`: validate, print a summary.
fn check(config: &Path) -> Result<(), Failure> {
    let v = load(config)?;
    // The file may be meant for another machine: a warning, not an error.
    if let Some(p) = v.cpu_problem() {
        eprintln!("warning: {}: {p}", config.display());
    }
    // The BIRD configuration l4lb would write, through BIRD's own parser.
    if let Some(b) = &v.config.bgp {
        let text = l4lb::control::bird::config_text(&v.config, &config.display().to_string());
        if l4lb::control::bird::available(&b.bird) {
            l4lb::control::bird::check(&b.bird, &text, &std::env::temp_dir())
                .map_err(|e| Failure::Usage(format!("{}: bgp: {e}", config.display())))?;
        } else {
            eprintln!(
                "warning: {}: bgp.bird: cannot run `{}`: BIRD's own check skipped",
                config.display(),
                b.bird
            );
        }
    }
    println!(
        "{}: OK ({} ports, {} workers, main lcore {})",
        config.display(),
        v.config.ports.len(),
        v.workers.len(),
        v.main_lcore
    );
    Ok(())
}

/// `l4lb simulate`: a pcap through the pipeline, the verdict counts.
fn simulate(
    config: &Path,
    input: &Path,
    output: &Path,
    port: Option<String>,
    trace: bool,
    workers: usize,
    assign: l4lb::simulate::Assign,
) -> Result<(), Failure> {
    let cfg = load(config)?;
    let in_port = match port {
        None => 0,
        Some(name) => match cfg.config.ports.iter().position(|p| p.name == name) {
            Some(i) => i as u16,
            None => {
                return Err(Failure::Usage(format!("--port {name}: no such port in {}", config.display())))
            }
        },
    };
    let mut stdout = std::io::stdout();
    let tr: Option<&mut dyn std::io::Write> = if trace { Some(&mut stdout) } else { None };
    let c = l4lb::simulate::run(&cfg, input, output, in_port, workers, assign, tr)
        .map_err(|e| Failure::Failed(e.to_string()))?;
    l4lb::simulate::report(&c, &mut std::io::stdout());
    Ok(())
}

/// `l4lb gen`: a benchmark capture.
#[allow(clippy::too_many_arguments)]
fn gen(
    output: &Path,
    flows: u32,
    packets: Option<u32>,
    mix: l4lb::trafficgen::Mix,
    sizes: l4lb::trafficgen::Sizes,
    vip: SocketAddr,
    dst_mac: &str,
    seed: u64,
    no_payload: bool,
    part: &str,
) -> Result<(), Failure> {
    let part = match part.split_once('/').map(|(k, n)| (k.parse::<u32>(), n.parse::<u32>())) {
        Some((Ok(k), Ok(n))) if n > 0 && k < n => (k, n),
        _ => return Err(Failure::Usage(format!("--part {part}: say K/N with K < N"))),
    };
    let Some(dst_mac) = l4lb::net::ethernet::parse_mac(dst_mac) else {
        return Err(Failure::Usage(format!("--dst-mac {dst_mac}: not a MAC address")));
    };
    if flows == 0 {
        return Err(Failure::Usage("--flows must be at least 1".into()));
    }
    let spec = l4lb::trafficgen::Spec {
        flows,
        packets: packets.unwrap_or(flows.max(4096)),
        mix,
        v6: vip.is_ipv6(),
        sizes,
        vip: vip.ip(),
        port: vip.port(),
        dst_mac,
        src_mac: [0x02, 0, 0, 0, 0x0c, 0x02],
        seed,
        no_payload,
        part,
    };
    l4lb::trafficgen::write(&spec, output)
        .map_err(|e| Failure::Failed(format!("{}: {e}", output.display())))?;
    println!("{}: {} packets, {} flows", output.display(), spec.packets, flows);
    Ok(())
}

/// `l4lb replay`: send a capture on one port, count what returns on another.
#[cfg(feature = "dpdk")]
fn replay(args: l4lb::replay::ReplayArgs) -> Result<(), Failure> {
    install_signals().map_err(|e| Failure::Failed(format!("cannot install the signal handlers: {e}")))?;
    let seconds = args.seconds;
    let r = l4lb::replay::run(&args, &SIGNALS.stop, &mut std::io::stdout()).map_err(Failure::Failed)?;
    println!(
        "offered {} sent {} refused {} received {} lost {} skipped {} seconds {:.3} offered_mpps {:.3} received_mpps {:.3}",
        r.offered,
        r.sent,
        r.refused,
        r.received,
        r.lost(),
        r.skipped,
        r.seconds,
        r.offered as f64 / seconds / 1e6,
        r.received as f64 / seconds / 1e6,
    );
    Ok(())
}

/// `l4lb ctl`: one request to a running l4lb, or `top`.
fn ctl(socket: Option<PathBuf>, config: Option<PathBuf>, json: bool, cmd: CtlCmd) -> Result<(), Failure> {
    let socket = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => load(&c)?.control_socket(),
        (None, None) => PathBuf::from("/run/l4lb/l4lb.sock"),
    };
    let req = match cmd {
        CtlCmd::Top { interval_ms, count } => {
            let every = Duration::from_millis(interval_ms.max(100));
            return l4lb::ctl::top(&socket, every, count).map_err(Failure::Failed);
        }
        CtlCmd::Status => Request::Status,
        CtlCmd::Services => Request::Services,
        CtlCmd::Backends { service } => Request::Backends { service },
        CtlCmd::Stats => Request::Stats,
        CtlCmd::Drain { backend } => Request::Drain { backend },
        CtlCmd::Undrain { backend } => Request::Undrain { backend },
        CtlCmd::SetWeight { backend, weight } => Request::SetWeight { backend, weight },
        CtlCmd::Reload => Request::Reload,
        CtlCmd::Lookup { proto, src, dst } => Request::Lookup { proto, src, dst },
        CtlCmd::Whatif { backend, change } => Request::Whatif { backend, change },
        CtlCmd::Bgp => Request::Bgp,
        CtlCmd::DrainBox { keep_running } => Request::DrainBox { keep_running },
        CtlCmd::UndrainBox => Request::UndrainBox,
        CtlCmd::Sync => Request::Sync,
    };
    let text = l4lb::ctl::run(&socket, &req, json).map_err(Failure::Failed)?;
    print!("{text}");
    Ok(())
}

/// `l4lb run`: the appliance, until SIGINT/SIGTERM.
#[cfg(feature = "dpdk")]
fn run(config: &Path) -> Result<(), Failure> {
    let mut cache = l4lb::control::config::ConfigCache::default();
    let cfg = Config::load_cached(config, &mut cache).map_err(|e| Failure::Usage(e.to_string()))?;
    // Before EAL, whose own complaint is its whole usage text.
    if let Some(p) = cfg.cpu_problem() {
        return Err(Failure::Usage(format!("{}: {p}", config.display())));
    }
    install_signals().map_err(|e| Failure::Failed(format!("cannot install the signal handlers: {e}")))?;
    let mut out = std::io::stdout();
    l4lb::app::run(&cfg, Some((config, &cache)), &SIGNALS, &mut out)
        .map_err(|e| Failure::Failed(e.to_string()))?;
    Ok(())
}
