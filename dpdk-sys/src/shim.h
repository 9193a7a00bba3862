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

#endif
