//! Distance or loss sweeps with optional optimisation at each point.

use crate::bounds::{plob, tgw};
use crate::finite::Security;
use crate::optimise::{optimise, OptimiseOptions};
use crate::protocol::Protocol;
use serde::Serialize;

/// One row of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Fibre distance, km (null when the sweep is over loss).
    pub distance_km: Option<f64>,
    /// Total channel loss, dB (fibre plus fixed extra loss).
    pub loss_db: f64,
    /// Secret bits per signal (pulse, symbol, slot or attempt).
    pub key_rate_per_pulse: f64,
    /// Secret bits per second.
    pub key_rate_bps: f64,
    /// PLOB bound at the channel transmittance, bits per channel use.
    pub plob_per_pulse: f64,
    /// TGW bound, bits per channel use.
    pub tgw_per_pulse: f64,
    /// Key-basis error rate.
    pub qber_key: f64,
    /// Test-basis / phase error rate (CV: excess noise in SNU; DI: CHSH value).
    pub qber_test: f64,
    /// The operating point's free parameters, by name.
    pub parameters: Vec<(String, f64)>,
}

/// What to sweep and how.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Channel losses to evaluate, dB, and their distances (if a distance sweep).
    pub points: Vec<(Option<f64>, f64)>,
    /// Which free parameters to optimise (by index); all false = fixed parameters.
    pub free: Vec<bool>,
    /// Security analysis.
    pub security: Security,
    /// Optimiser budget.
    pub optimiser: OptimiseOptions,
}

/// Runs a sweep. Each optimised point starts from the previous point's optimum, and
/// from the configured values; the better of the two searches is kept.
pub fn sweep(protocol: &Protocol, opts: &SweepOptions) -> Vec<Row> {
    let model = protocol.model();
    let names: Vec<&str> = model.free_params().iter().map(|p| p.name).collect();
    let initial = model.initial();
    let any_free = opts.free.iter().any(|&f| f);
    let mut warm = initial.clone();
    // Whether the previous point's searches (warm and cold) found no key.
    let mut previous_failed = false;
    let mut rows = Vec::with_capacity(opts.points.len());
    for &(distance, loss) in &opts.points {
        let (x, eval) = if any_free {
            let a = optimise(
                model,
                loss,
                &warm,
                &opts.free,
                &opts.security,
                &opts.optimiser,
            );
            // A cold restart from the configured point catches warm starts stuck in a
            // no-key plateau; it is only needed when the warm search found no key, and it is
            // skipped when the previous point's cold restart already failed from the same
            // starts (deep in the no-key region it would repeat the same futile search).
            let best = if a.eval.raw_key_per_signal > 0.0 || previous_failed {
                a
            } else {
                let b = optimise(
                    model,
                    loss,
                    &initial,
                    &opts.free,
                    &opts.security,
                    &opts.optimiser,
                );
                if b.eval.raw_key_per_signal > a.eval.raw_key_per_signal {
                    b
                } else {
                    a
                }
            };
            previous_failed = best.eval.raw_key_per_signal <= 0.0;
            if !previous_failed {
                warm = best.x.clone();
            }
            (best.x, best.eval)
        } else {
            (
                initial.clone(),
                model.evaluate(loss, &initial, &opts.security),
            )
        };
        let eta = 10f64.powf(-loss / 10.0);
        let k = eval.key_per_signal();
        rows.push(Row {
            distance_km: distance,
            loss_db: loss,
            key_rate_per_pulse: k,
            key_rate_bps: k * protocol.signals_per_second(loss),
            plob_per_pulse: plob(eta),
            tgw_per_pulse: tgw(eta),
            qber_key: eval.qber_key,
            qber_test: eval.qber_test,
            parameters: names
                .iter()
                .zip(&x)
                .map(|(n, v)| (n.to_string(), *v))
                .collect(),
        });
    }
    rows
}
