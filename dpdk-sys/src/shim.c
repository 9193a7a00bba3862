#include "shim.h"

uint16_t l4lb_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **pkts, uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, pkts, nb_pkts);
}

uint16_t l4lb_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **pkts, uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, pkts, nb_pkts);
}

struct rte_mbuf *l4lb_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int l4lb_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void l4lb_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
char *l4lb_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *l4lb_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
char *l4lb_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int l4lb_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
void *l4lb_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }
uint16_t l4lb_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
uint32_t l4lb_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
uint16_t l4lb_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t l4lb_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
int l4lb_pktmbuf_is_contiguous(const struct rte_mbuf *m) { return rte_pktmbuf_is_contiguous(m); }

unsigned int l4lb_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n)
{
	return rte_ring_enqueue_burst(r, objs, n, NULL);
}

int l4lb_errno(void) { return rte_errno; }
unsigned int l4lb_lcore_id(void) { return rte_lcore_id(); }
uint64_t l4lb_rdtsc(void) { return rte_rdtsc(); }
void l4lb_prefetch0(const void *p) { rte_prefetch0(p); }
void l4lb_pause(void) { rte_pause(); }

const uint64_t l4lb_eth_rss_ip = RTE_ETH_RSS_IP;
const uint64_t l4lb_eth_rss_tcp = RTE_ETH_RSS_TCP;
const uint64_t l4lb_eth_rss_udp = RTE_ETH_RSS_UDP;
const uint64_t l4lb_eth_mq_rx_rss = RTE_ETH_MQ_RX_RSS;
const uint64_t l4lb_eth_mq_rx_none = RTE_ETH_MQ_RX_NONE;
const uint64_t l4lb_eth_tx_offload_mbuf_fast_free = RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;
const uint64_t l4lb_eth_tx_offload_ipv4_cksum = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
const uint64_t l4lb_eth_rx_offload_checksum = RTE_ETH_RX_OFFLOAD_CHECKSUM;
const uint64_t l4lb_mbuf_f_rx_rss_hash = RTE_MBUF_F_RX_RSS_HASH;
const uint32_t l4lb_max_lcore = RTE_MAX_LCORE;
const uint32_t l4lb_mbuf_default_buf_size = RTE_MBUF_DEFAULT_BUF_SIZE;
const uint32_t l4lb_pktmbuf_headroom_default = RTE_PKTMBUF_HEADROOM;
