"""NeTAMS `service acl-server`: the blocks acctd decides, pushed to remote
routers. enforcer.py is the contract every back-end keeps and the pusher
that keeps a router equal to the desired set; bgp.py (RTBH and FlowSpec
through GoBGP), nft.py (an nftables set) and routeros.py (an address list)
are the back-ends; service.py is the daemon's service and its settings."""
