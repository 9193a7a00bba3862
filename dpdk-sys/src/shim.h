/*
 * C shim over DPDK's static-inline functions and macros, which bindgen cannot
 * bind: every function here is a thin, non-inline wrapper with an l4lb_ prefix.
 */
#ifndef L4LB_DPDK_SHIM_H
#define L4LB_DPDK_SHIM_H

#include <stdint.h>

#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_dev.h>
#include <rte_bus_vdev.h>
#include <rte_log.h>
#include <rte_pdump.h>
#include <rte_pcapng.h>
#include <rte_bpf.h>
#include <rte_ring.h>
#include <rte_memzone.h>
#include <rte_telemetry.h>

/* ethdev fast path */
uint16_t l4lb_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **pkts, uint16_t nb_pkts);
uint16_t l4lb_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **pkts, uint16_t nb_pkts);

/* mbufs */
struct rte_mbuf *l4lb_pktmbuf_alloc(struct rte_mempool *mp);
int l4lb_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int count);
void l4lb_pktmbuf_free(struct rte_mbuf *m);
char *l4lb_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *l4lb_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
char *l4lb_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int l4lb_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
void *l4lb_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t l4lb_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t l4lb_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t l4lb_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t l4lb_pktmbuf_tailroom(const struct rte_mbuf *m);
int l4lb_pktmbuf_is_contiguous(const struct rte_mbuf *m);

/* errno, lcores, time, cache */
int l4lb_errno(void);
unsigned int l4lb_lcore_id(void);
uint64_t l4lb_rdtsc(void);
void l4lb_prefetch0(const void *p);
void l4lb_pause(void);

/* RSS and offload flags (64-bit macros bindgen cannot evaluate) */
extern const uint64_t l4lb_eth_rss_ip;
extern const uint64_t l4lb_eth_rss_tcp;
extern const uint64_t l4lb_eth_rss_udp;
extern const uint64_t l4lb_eth_mq_rx_rss;
extern const uint64_t l4lb_eth_mq_rx_none;
extern const uint64_t l4lb_eth_tx_offload_mbuf_fast_free;
extern const uint64_t l4lb_eth_tx_offload_ipv4_cksum;
extern const uint64_t l4lb_eth_rx_offload_checksum;
extern const uint64_t l4lb_mbuf_f_rx_rss_hash;
extern const uint32_t l4lb_max_lcore;
extern const uint32_t l4lb_mbuf_default_buf_size;
extern const uint32_t l4lb_pktmbuf_headroom_default;

/* rings */
unsigned int l4lb_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n);

/*
 * DPDK's packet-capture protocol (dpdk-dumpcap, dpdk-pdump), which l4lb serves
 * itself (src/dpdk/capture.rs). A secondary sends this request as the
 * parameter of a multi-process message named "mp_pdump"; the primary answers
 * with the response. Both mirror the private structs of DPDK 22.11's
 * lib/pdump/rte_pdump.c (request versions 1 = pcap copy, 2 = pcapng); the
 * layout tests bindgen writes and the size checks in capture.rs keep them
 * honest for this build.
 */
struct l4lb_pdump_request {
	uint16_t ver;
	uint16_t op;
	uint32_t flags;
	char device[RTE_DEV_NAME_MAX_LEN];
	uint16_t queue;
	struct rte_ring *ring;
	struct rte_mempool *mp;
	const struct rte_bpf_prm *prm;
	uint32_t snaplen;
};

struct l4lb_pdump_response {
	uint16_t ver;
	uint16_t res_op;
	int32_t err_value;
};

/* The statistics memzone rte_pdump_init reserves ("rte_pdump_stats"), which
 * the secondary's rte_pdump_stats() sums per port. */
struct l4lb_pdump_stats_zone {
	struct rte_pdump_stats rx[RTE_MAX_ETHPORTS][RTE_MAX_QUEUES_PER_PORT];
	struct rte_pdump_stats tx[RTE_MAX_ETHPORTS][RTE_MAX_QUEUES_PER_PORT];
	const struct rte_memzone *mz;
};

#endif
