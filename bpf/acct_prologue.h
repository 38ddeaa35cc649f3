/* acct_prologue.h - what every acctd BPF compilation unit includes first. */
#ifndef ACCT_PROLOGUE_H
#define ACCT_PROLOGUE_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/pkt_cls.h>

#include "acct_abi.h"
#include "acct_consts.h"
#include "acct_maps.h"
#include "acct_lib.h"

#endif /* ACCT_PROLOGUE_H */
