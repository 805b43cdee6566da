//! The network input's schema (see `crate::schema`).
use crate::schema::{counter, gauge, text, Schema, Unit};

pub static SCHEMA: Schema = Schema {
    name: "network",
    tags: &[],
    own_tags: &["nic"],
    fields: &[
        gauge(
            "interval",
            Unit::Seconds,
            "Time since the interface's previous sample.",
        ),
        gauge(
            "isup",
            Unit::None,
            "Whether the interface is up (1) or not (0).",
        ),
        gauge("duplex", Unit::None, "Duplex: 2 full, 1 half, 0 unknown."),
        gauge(
            "speed",
            Unit::MegabitsPerSecond,
            "Link speed in Mbit/s, 0 when unknown.",
        ),
        gauge("mtu", Unit::Bytes, "MTU."),
        text("mac", "Hardware address."),
        text("ipv4", "IPv4 addresses."),
        text("ipv6", "IPv6 addresses."),
        counter("bytes_sent", Unit::Bytes, "Bytes sent since boot."),
        counter("bytes_recv", Unit::Bytes, "Bytes received since boot."),
        counter("packets_sent", Unit::Packets, "Packets sent since boot."),
        counter(
            "packets_recv",
            Unit::Packets,
            "Packets received since boot.",
        ),
        counter("errin", Unit::None, "Receive errors since boot."),
        counter("errout", Unit::None, "Send errors since boot."),
        counter("dropin", Unit::None, "Received packets dropped since boot."),
        counter(
            "dropout",
            Unit::None,
            "Outgoing packets dropped since boot.",
        ),
        gauge("bps_in", Unit::BitsPerSecond, "Receive rate in bit/s."),
        gauge("bps_out", Unit::BitsPerSecond, "Send rate in bit/s."),
        gauge(
            "pps_in",
            Unit::PacketsPerSecond,
            "Receive rate in packets/s.",
        ),
        gauge("pps_out", Unit::PacketsPerSecond, "Send rate in packets/s."),
        gauge(
            "kbps_in",
            Unit::KilobitsPerSecond,
            "Receive rate in kbit/s.",
        ),
        gauge("kbps_out", Unit::KilobitsPerSecond, "Send rate in kbit/s."),
        text("human_kbps_in", "Receive rate in human form."),
        text("human_kbps_out", "Send rate in human form."),
    ],
    groups: &[],
};
