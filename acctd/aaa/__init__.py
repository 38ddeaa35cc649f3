"""Authentication, authorization and accounting peers: RADIUS, CoA, OpenVPN, F-TICKS."""
