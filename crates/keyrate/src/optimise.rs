//! Maximising the key rate over a model's free parameters.
//!
//! Bounded Nelder–Mead (Nelder & Mead, Comput. J. 7, 308 (1965)) in transformed
//! coordinates: log-scaled parameters are searched in ln x, and every coordinate is mapped
//! to the unit interval and clamped, so the simplex never leaves the allowed box. The
//! objective is the unclamped key length (negative in the no-key region), which gives the
//! search a slope towards positive rates. A sweep warm-starts each point from the previous
//! optimum, which is why a 400-point optimised sweep costs far less than 400 cold searches.

use crate::finite::Security;
use crate::model::{Evaluation, FreeParam, KeyRateModel, Scale};

/// Search budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimiseOptions {
    /// Maximum objective evaluations per point.
    pub max_evaluations: usize,
    /// Stop when the simplex's objective spread is below this relative tolerance.
    pub rel_tolerance: f64,
}

impl Default for OptimiseOptions {
    fn default() -> Self {
        Self {
            max_evaluations: 600,
            rel_tolerance: 1e-7,
        }
    }
}

fn to_unit(p: &FreeParam, x: f64) -> f64 {
    let x = x.clamp(p.lo, p.hi);
    match p.scale {
        Scale::Log => (x.ln() - p.lo.ln()) / (p.hi.ln() - p.lo.ln()),
        Scale::Linear => (x - p.lo) / (p.hi - p.lo),
    }
}

fn from_unit(p: &FreeParam, u: f64) -> f64 {
    let u = u.clamp(0.0, 1.0);
    match p.scale {
        Scale::Log => (p.lo.ln() + u * (p.hi.ln() - p.lo.ln())).exp(),
        Scale::Linear => p.lo + u * (p.hi - p.lo),
    }
}

/// Points per free parameter scanned when the start gives no key.
const PLATEAU_SCAN: usize = 16;

/// Result of one optimisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Optimum {
    /// The best parameters found.
    pub x: Vec<f64>,
    /// Their evaluation.
    pub eval: Evaluation,
    /// Objective evaluations used.
    pub evaluations: usize,
}

/// Maximises the key of `model` at `loss_db` over the parameters flagged in `free`
/// (others stay at `start`), starting from `start`.
pub fn optimise<M: KeyRateModel + ?Sized>(
    model: &M,
    loss_db: f64,
    start: &[f64],
    free: &[bool],
    sec: &Security,
    opts: &OptimiseOptions,
) -> Optimum {
    let params = model.free_params();
    let idx: Vec<usize> = (0..params.len())
        .filter(|&i| free.get(i).copied().unwrap_or(false))
        .collect();
    let mut x = start.to_vec();
    let evals = std::cell::Cell::new(0usize);
    let f = |u: &[f64], x: &mut Vec<f64>| -> f64 {
        for (k, &i) in idx.iter().enumerate() {
            x[i] = from_unit(&params[i], u[k]);
        }
        evals.set(evals.get() + 1);
        let e = model.evaluate(loss_db, x, sec);
        if e.raw_key_per_signal.is_finite() {
            e.raw_key_per_signal
        } else {
            f64::MIN / 4.0
        }
    };
    let d = idx.len();
    if d == 0 {
        let eval = model.evaluate(loss_db, &x, sec);
        return Optimum {
            x,
            eval,
            evaluations: 1,
        };
    }
    let mut u0: Vec<f64> = idx.iter().map(|&i| to_unit(&params[i], start[i])).collect();
    // A start with no key sits on a plateau the simplex cannot leave (every neighbour is
    // zero too, e.g. a pump so strong that accidentals swamp the coincidences): look along
    // each free parameter for a point with key first.
    if f(&u0, &mut x) <= 0.0 {
        let mut best = (0.0, u0.clone());
        for k in 0..d {
            for step in 0..=PLATEAU_SCAN {
                let mut v = u0.clone();
                v[k] = step as f64 / PLATEAU_SCAN as f64;
                let val = f(&v, &mut x);
                if val > best.0 {
                    best = (val, v);
                }
            }
        }
        u0 = best.1;
    }
    // Initial simplex: steps of 0.1 in unit space, reflected inward at the bounds.
    let mut simplex: Vec<Vec<f64>> = vec![u0.clone()];
    for k in 0..d {
        let mut v = u0.clone();
        v[k] = if v[k] + 0.1 <= 1.0 {
            v[k] + 0.1
        } else {
            v[k] - 0.1
        };
        simplex.push(v);
    }
    let mut vals: Vec<f64> = simplex.iter().map(|v| f(v, &mut x)).collect();
    let clamp = |v: &mut Vec<f64>| v.iter_mut().for_each(|c| *c = c.clamp(0.0, 1.0));
    while evals.get() < opts.max_evaluations {
        // Order: best (max) first.
        let mut order: Vec<usize> = (0..=d).collect();
        order.sort_by(|&a, &b| {
            vals[b]
                .partial_cmp(&vals[a])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        simplex = order.iter().map(|&i| simplex[i].clone()).collect();
        vals = order.iter().map(|&i| vals[i]).collect();
        let (best, worst) = (vals[0], vals[d]);
        let size: f64 = simplex[1..]
            .iter()
            .map(|v| {
                v.iter()
                    .zip(&simplex[0])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max);
        if (best - worst).abs() <= opts.rel_tolerance * best.abs().max(1e-300) && size < 1e-3
            || size < 1e-9
        {
            break;
        }
        let centroid: Vec<f64> = (0..d)
            .map(|k| simplex[..d].iter().map(|v| v[k]).sum::<f64>() / d as f64)
            .collect();
        let along = |t: f64| -> Vec<f64> {
            (0..d)
                .map(|k| centroid[k] + t * (simplex[d][k] - centroid[k]))
                .collect()
        };
        let mut xr = along(-1.0);
        clamp(&mut xr);
        let fr = f(&xr, &mut x);
        if fr > vals[0] {
            let mut xe = along(-2.0);
            clamp(&mut xe);
            let fe = f(&xe, &mut x);
            if fe > fr {
                simplex[d] = xe;
                vals[d] = fe;
            } else {
                simplex[d] = xr;
                vals[d] = fr;
            }
        } else if fr > vals[d - 1] {
            simplex[d] = xr;
            vals[d] = fr;
        } else {
            let (mut xc, outside) = if fr > vals[d] {
                (along(-0.5), true)
            } else {
                (along(0.5), false)
            };
            clamp(&mut xc);
            let fc = f(&xc, &mut x);
            if (outside && fc >= fr) || (!outside && fc > vals[d]) {
                simplex[d] = xc;
                vals[d] = fc;
            } else {
                // Shrink towards the best vertex.
                for i in 1..=d {
                    let v: Vec<f64> = (0..d)
                        .map(|k| simplex[0][k] + 0.5 * (simplex[i][k] - simplex[0][k]))
                        .collect();
                    vals[i] = f(&v, &mut x);
                    simplex[i] = v;
                }
            }
        }
    }
    let best = (0..=d)
        .max_by(|&a, &b| {
            vals[a]
                .partial_cmp(&vals[b])
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .unwrap_or(0);
    for (k, &i) in idx.iter().enumerate() {
        x[i] = from_unit(&params[i], simplex[best][k]);
    }
    let eval = model.evaluate(loss_db, &x, sec);
    Optimum {
        x,
        eval,
        evaluations: evals.get() + 1,
    }
}
