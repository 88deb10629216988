//! DNSBL datasets in rbldnsd's formats (being written).
