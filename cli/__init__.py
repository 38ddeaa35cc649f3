"""acctctl: the operator's command line for acctd (installed from cli/)."""
