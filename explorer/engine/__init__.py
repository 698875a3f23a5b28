"""The dissection engine: the only package that starts tshark, sharkd, capinfos or dumpcap."""
