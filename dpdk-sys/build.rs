//! Finds the system DPDK with pkg-config, compiles the C shim with the exact
//! `pkg-config --cflags`, and runs bindgen over a short allowlist.

use std::env;
use std::path::PathBuf;
use std::process::{exit, Command};

const MIN_VERSION: &str = "22.11";

fn main() {
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib =
        match pkg_config::Config::new().atleast_version(MIN_VERSION).cargo_metadata(true).probe("libdpdk") {
            Ok(lib) => lib,
            Err(_) => {
                eprintln!("error: libdpdk >= {MIN_VERSION} not found by pkg-config; run scripts/setup.sh");
                exit(1);
            }
        };

    // The exact flags DPDK asks for (including `-include rte_config.h` and its
    // -march baseline), passed unchanged to both the C compiler and bindgen.
    let out = Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("pkg-config runs (it just found libdpdk)");
    let cflags: Vec<String> =
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();

    let mut build = cc::Build::new();
    build.file("src/shim.c").warnings(false).opt_level(3);
    for flag in &cflags {
        build.flag(flag);
    }
    build.compile("l4lb_dpdk_shim");

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bindings = bindgen::Builder::default()
        .header("src/shim.h")
        .clang_args(&cflags)
        .clang_arg("-Isrc")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate_comments(false)
        .layout_tests(true)
        .derive_default(true)
        .prepend_enum_name(false)
        .allowlist_function("l4lb_.*")
        .allowlist_var("l4lb_.*")
        .allowlist_function(
            "rte_eal_(init|cleanup|remote_launch|wait_lcore|mp_wait_lcore|process_type|has_hugepages)",
        )
        .allowlist_function("rte_strerror")
        .allowlist_function(
            "rte_(lcore_count|get_main_lcore|get_next_lcore|lcore_is_enabled|lcore_to_cpu_id|lcore_to_socket_id|socket_id|get_tsc_hz)",
        )
        .allowlist_function("rte_pktmbuf_(pool_create|free_bulk)")
        .allowlist_function("rte_mempool_(free|avail_count|in_use_count)")
        .allowlist_function(
            "rte_eth_(dev_default_mac_addr_set|dev_count_avail|dev_get_port_by_name|dev_get_name_by_port|dev_info_get|dev_configure|rx_queue_setup|tx_queue_setup|dev_start|dev_stop|dev_close|macaddr_get|dev_set_mtu|dev_get_mtu|link_get_nowait|stats_get|stats_reset|xstats_get|xstats_get_names|xstats_reset|promiscuous_enable|dev_socket_id|dev_adjust_nb_rx_tx_desc|dev_is_valid_port|find_next_owned_by)",
        )
        .allowlist_function("rte_dev_probe|rte_dev_remove|rte_eth_dev_get_port_by_name")
        .allowlist_function("rte_log_set_global_level")
        .allowlist_function("rte_pdump_(init|uninit)")
        .allowlist_type("l4lb_pdump_.*")
        .allowlist_function("rte_mp_(action_register|action_unregister|reply)")
        .allowlist_function("rte_eth_(add_first_rx|add_tx|remove_rx|remove_tx)_callback")
        .allowlist_function("rte_pcapng_copy|rte_pktmbuf_copy|rte_memzone_lookup")
        .allowlist_function("rte_bpf_(load|destroy|exec_burst)")
        .allowlist_type("rte_bpf_prm|rte_pdump_stats|rte_mp_msg|rte_memzone")
        .allowlist_var("RTE_MAX_QUEUES_PER_PORT|RTE_DEV_NAME_MAX_LEN|RTE_PDUMP_.*|RTE_MP_MAX_.*")
        .allowlist_var("RTE_BPF_ARG_PTR_MBUF|RTE_PCAPNG_DIRECTION_.*")
        .allowlist_type("rte_mbuf")
        .allowlist_type("rte_eth_(conf|dev_info|rxconf|txconf|link|stats|xstat|xstat_name)")
        .allowlist_type("rte_ether_addr")
        .allowlist_var("RTE_ETH_(LINK_|NAME_MAX_LEN|XSTATS_NAME_SIZE).*")
        .allowlist_var("RTE_LOG_.*")
        .allowlist_var("RTE_MAX_ETHPORTS|RTE_MAX_LCORE|RTE_ETHER_.*_LEN|RTE_ETHER_MTU")
        .allowlist_type("rte_proc_type_t|rte_lcore_state_t")
        .generate()
        .unwrap_or_else(|e| {
            eprintln!("error: bindgen over the DPDK headers failed ({e}); run scripts/setup.sh");
            exit(1);
        });
    bindings.write_to_file(out_dir.join("bindings.rs")).expect("bindings written to OUT_DIR");

    // Let dependants find the include path (DEP_DPDK_INCLUDE).
    if let Some(inc) = lib.include_paths.first() {
        println!("cargo:include={}", inc.display());
    }
}
