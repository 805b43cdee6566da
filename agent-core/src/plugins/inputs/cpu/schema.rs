//! The cpu input's schema (see `crate::schema`): per-CPU values and the
//! busiest processes are series of their own in dimensional outputs.
use crate::schema::{counter, gauge, text, Group, Schema, Unit};

pub static SCHEMA: Schema = Schema {
    name: "cpu",
    tags: &[],
    own_tags: &[],
    fields: &[
        gauge("logical_count", Unit::None, "Logical CPUs.").exposed_as("logical_cpus"),
        gauge("count", Unit::None, "Physical CPU cores.").exposed_as("cores"),
        gauge(
            "percent",
            Unit::Percent,
            "Total CPU use since the last gather.",
        ),
        gauge(
            "max_percent",
            Unit::Percent,
            "Highest per-CPU use since the last gather.",
        ),
        counter(
            "times_<t>",
            Unit::Seconds,
            "Cumulative CPU time in this mode since boot.",
        ),
        gauge(
            "times_percent_<t>",
            Unit::Percent,
            "Share of CPU time in this mode since the last gather.",
        ),
        counter(
            "stats_ctx_switches",
            Unit::None,
            "Context switches since boot.",
        ),
        counter("stats_interrupts", Unit::None, "Interrupts since boot."),
        counter(
            "stats_soft_interrupts",
            Unit::None,
            "Soft interrupts since boot.",
        ),
        counter(
            "stats_syscalls",
            Unit::None,
            "System calls since boot (0 on Linux).",
        ),
        gauge("loadavg_1", Unit::None, "Load average over 1 minute."),
        gauge("loadavg_5", Unit::None, "Load average over 5 minutes."),
        gauge("loadavg_15", Unit::None, "Load average over 15 minutes."),
        gauge(
            "loadavg_precent_1",
            Unit::Percent,
            "1-minute load per logical CPU.",
        ),
        gauge(
            "loadavg_precent_5",
            Unit::Percent,
            "5-minute load per logical CPU.",
        ),
        gauge(
            "loadavg_precent_15",
            Unit::Percent,
            "15-minute load per logical CPU.",
        ),
        text("process_top", "The busiest processes as pid.name(cpu%)."),
    ],
    groups: &[
        Group {
            prefix: "percent_percpu_",
            placeholder: "<i>",
            measurement: "cpu_percpu",
            index: "cpu",
            index_is_tag: true,
            whole: "percent",
            tags: &[],
            fields: &[gauge(
                "percent",
                Unit::Percent,
                "CPU use of one logical CPU since the last gather.",
            )],
        },
        Group {
            prefix: "process_top_",
            placeholder: "<rank>",
            measurement: "cpu_process_top",
            index: "rank",
            index_is_tag: false,
            whole: "",
            tags: &["pid", "name"],
            fields: &[
                gauge(
                    "rank",
                    Unit::None,
                    "Rank among the busiest processes, 1 = busiest.",
                ),
                gauge(
                    "cpu_percent",
                    Unit::Percent,
                    "CPU share of a busiest process, 100 = one core.",
                ),
            ],
        },
    ],
};
