//! Cairn's own `cairn_plugin_*` series: per plugin and hook, the calls,
//! the denials, the failures by kind, the fuel burnt and the call latency,
//! as this member saw them.

use prometheus::{exponential_buckets, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

pub struct PluginMetrics {
    calls: IntCounterVec,
    denials: IntCounterVec,
    failures: IntCounterVec,
    fuel: IntCounterVec,
    seconds: HistogramVec,
}

fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definitions are valid");
    registry.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

impl PluginMetrics {
    pub(super) fn new(registry: &Registry) -> PluginMetrics {
        let labels = ["plugin", "hook"];
        // Calls take microseconds to milliseconds; the fuel limit bounds
        // the slowest at seconds.
        let buckets = exponential_buckets(0.000_01, 4.0, 10).expect("valid buckets");
        let seconds = HistogramVec::new(
            HistogramOpts::new("cairn_plugin_call_duration_seconds", "The latency distributions of plugin calls.").buckets(buckets),
            &labels,
        )
        .expect("metric definitions are valid");
        registry.register(Box::new(seconds.clone())).expect("metric names are unique");
        PluginMetrics {
            calls: counters(registry, "cairn_plugin_calls_total", "The total number of plugin calls.", &labels),
            denials: counters(
                registry,
                "cairn_plugin_denials_total",
                "The total number of plugin calls that denied (or, outside enforce mode, would have denied) a request.",
                &labels,
            ),
            failures: counters(
                registry,
                "cairn_plugin_failures_total",
                "The total number of plugin calls that failed, by kind (trap, out_of_fuel, memory, stack_overflow, output_too_large, instantiation).",
                &["plugin", "hook", "kind"],
            ),
            fuel: counters(registry, "cairn_plugin_fuel_consumed_total", "The total fuel plugin calls consumed.", &labels),
            seconds,
        }
    }

    /// One call of `plugin` at `hook` that took `seconds`, and its failure
    /// kind if it failed.
    pub fn call(&self, plugin: &str, hook: &str, seconds: f64, failure: Option<&str>) {
        self.calls.with_label_values(&[plugin, hook]).inc();
        self.seconds.with_label_values(&[plugin, hook]).observe(seconds);
        if let Some(kind) = failure {
            self.failures.with_label_values(&[plugin, hook, kind]).inc();
        }
    }

    pub fn denial(&self, plugin: &str, hook: &str) {
        self.denials.with_label_values(&[plugin, hook]).inc();
    }

    pub fn fuel(&self, plugin: &str, hook: &str, fuel: u64) {
        self.fuel.with_label_values(&[plugin, hook]).inc_by(fuel);
    }
}
