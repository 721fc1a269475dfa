//! Link scenario files (`qkdnet rate`, `emulate`, `run`, and the links of network files): one link, its protocol and hardware, the published
//! figures it should reproduce. Format documented in `docs/SCENARIOS.md`.

use crate::InputError;
use qkdnet_keyrate::bbm92::{Bbm92Cw, Bbm92Pulsed};
use qkdnet_keyrate::cv::CvGg02;
use qkdnet_keyrate::decoy_bb84::DecoyBb84;
use qkdnet_keyrate::di::DiQkd;
use qkdnet_keyrate::mdi::Mdi;
use qkdnet_keyrate::protocol::NAMES;
use qkdnet_keyrate::tf::{TfVariant, TwinField};
use qkdnet_keyrate::{FiniteKey, Protocol};
use serde::Deserialize;

/// The channel: how distance turns into loss.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// Nominal link length, km (the point evaluated when no sweep is given).
    pub distance_km: Option<f64>,
    /// Nominal total loss, dB (instead of a distance).
    pub loss_db: Option<f64>,
    /// Fibre attenuation, dB/km.
    #[serde(default = "default_fibre")]
    pub fibre_loss_db_per_km: f64,
    /// Loss added to the fibre's (components, connectors), dB.
    #[serde(default)]
    pub extra_loss_db: f64,
}

fn default_fibre() -> f64 {
    0.2
}

impl Default for Channel {
    fn default() -> Self {
        Self {
            distance_km: None,
            loss_db: None,
            fibre_loss_db_per_km: 0.2,
            extra_loss_db: 0.0,
        }
    }
}

/// Which parameters the optimiser may change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimiseSection {
    /// Names of free parameters to optimise; absent = all of them; empty = none.
    pub free: Option<Vec<String>>,
}

/// A published figure the scenario reproduces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// What is compared: `key_rate_bps`, `key_rate_per_pulse`, `qber_key`, `qber_test`,
    /// `above_plob` (ratio key/PLOB).
    pub quantity: String,
    /// The published value.
    pub value: f64,
    /// Where: total loss, dB …
    pub loss_db: Option<f64>,
    /// … or distance, km.
    pub distance_km: Option<f64>,
    /// Paper, table or figure.
    pub citation: String,
    /// Relative tolerance within which the scenario counts as reproducing it.
    #[serde(default = "default_tol")]
    pub tolerance: f64,
}

fn default_tol() -> f64 {
    0.15
}

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Short name.
    pub name: String,
    /// What it models, and the assumptions made where the paper is silent.
    #[serde(default)]
    #[allow(dead_code)]
    pub description: String,
    /// Protocol family, one of `protocol::NAMES`.
    pub protocol: String,
    /// The channel.
    #[serde(default)]
    pub channel: Channel,
    /// Protocol-specific hardware table (fields as in the family's struct).
    #[serde(default)]
    pub hardware: Option<toml::Table>,
    /// Optimiser settings.
    #[serde(default)]
    pub optimise: OptimiseSection,
    /// Finite-key settings; absent = defaults (block 1e12, ε_sec 1e-10, ε_cor 1e-15).
    #[serde(default)]
    pub finite_key: Option<FiniteKey>,
    /// Published figures.
    #[serde(default, rename = "reference")]
    pub references: Vec<Reference>,
    /// Emulation settings beyond the hardware (`qkdnet emulate`; ignored by `rate`).
    #[serde(default)]
    pub emulator: Option<toml::Table>,
    /// Faults injected on a schedule (`qkdnet emulate`; ignored by `rate`).
    #[serde(default, rename = "fault")]
    pub faults: Vec<qkdnet_emulator::Fault>,
    /// How the link is operated (`qkdnet run`; its flags override these).
    #[serde(default)]
    pub run: RunSection,
}

/// The `[run]` table of a link scenario: the operator's settings of the link runtime, so
/// a link whose finite-key block or pump strategy differs from the defaults carries them
/// (for example a 100 km link that must gather hours of key per block).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Distillation block, seconds of sifted key (default 600).
    pub block_s: Option<f64>,
    /// `qber-z` or `key-rate` (default `qber-z`).
    pub pump_objective: Option<String>,
    /// QBER_Z the `qber-z` objective steers to (default 0.043).
    pub qber_target: Option<f64>,
    /// CV-QKD: symbols the link's post-processing reconciles per block, spread over the
    /// block (default 1.2e6; 1e5 to 1e8). The finite-size bound is that of these symbols.
    pub block_symbols: Option<f64>,
}

impl RunSection {
    /// Checks every value given, naming the field.
    pub fn check(&self) -> Result<(), InputError> {
        if let Some(b) = self.block_s {
            if !(b.is_finite() && (1.0..=1e7).contains(&b)) {
                return Err(InputError::new(format!(
                    "[run] block_s: must be in 1..=1e7 s, got {b}"
                )));
            }
        }
        if let Some(n) = self.block_symbols {
            crate::cv::check_block_symbols(n)
                .map_err(|e| InputError::new(format!("[run] block_symbols: {e}")))?;
        }
        if let Some(o) = &self.pump_objective {
            if o != "qber-z" && o != "key-rate" {
                return Err(InputError::new(format!(
                    "[run] pump_objective: \"{o}\" is not qber-z or key-rate"
                )));
            }
        }
        if let Some(q) = self.qber_target {
            if !(q > 0.0 && q < 0.11) {
                return Err(InputError::new(format!(
                    "[run] qber_target: must be in (0, 0.11), got {q}"
                )));
            }
        }
        Ok(())
    }
}

/// Builds a protocol from its name and a hardware table (already merged with overrides).
pub fn build_protocol(
    name: &str,
    hardware: &toml::Table,
    origin: &str,
) -> Result<Protocol, InputError> {
    fn de<T: for<'de> Deserialize<'de>>(t: &toml::Table, origin: &str) -> Result<T, InputError> {
        T::deserialize(toml::Value::Table(t.clone())).map_err(|e| {
            InputError::new(format!(
                "{origin}: [hardware]: {}",
                e.to_string().trim().replace('\n', " ")
            ))
        })
    }
    let p = match name {
        "decoy-bb84" => Protocol::DecoyBb84(de::<DecoyBb84>(hardware, origin)?),
        "bbm92-cw" => Protocol::Bbm92Cw(de::<Bbm92Cw>(hardware, origin)?),
        "bbm92-pulsed" => Protocol::Bbm92Pulsed(de::<Bbm92Pulsed>(hardware, origin)?),
        "mdi" => Protocol::Mdi(de::<Mdi>(hardware, origin)?),
        "sns" | "sns-aopp" | "pm" => {
            let mut t = hardware.clone();
            t.remove("variant");
            let mut hw: TwinField = if t.is_empty() {
                match Protocol::default_for(name) {
                    Some(Protocol::TwinField(m)) => m.hw,
                    _ => TwinField::default(),
                }
            } else {
                de::<TwinField>(&t, origin)?
            };
            hw.variant = match name {
                "sns" => TfVariant::Sns,
                "sns-aopp" => TfVariant::SnsAopp,
                _ => TfVariant::Pm,
            };
            Protocol::TwinField(hw.prepare())
        }
        "cv-gg02" => Protocol::Cv(de::<CvGg02>(hardware, origin)?),
        "di-memory" => Protocol::Di(de::<DiQkd>(hardware, origin)?),
        other => {
            return Err(InputError::new(format!(
                "{origin}: protocol: unknown protocol \"{other}\" (expected one of: {})",
                NAMES.join(", ")
            )))
        }
    };
    p.validate()
        .map_err(|e| InputError::new(format!("{origin}: {}: {}", e.field, e.reason)))?;
    Ok(p)
}

/// Reads and parses a scenario file.
pub fn load(path: &std::path::Path) -> Result<ScenarioFile, InputError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| InputError::new(format!("{}: cannot read: {e}", path.display())))?;
    let s: ScenarioFile = toml::from_str(&text).map_err(|e| {
        let msg = e.message().trim().replace('\n', " ");
        let at = e.span().map(|sp| {
            let line = text[..sp.start].matches('\n').count() + 1;
            format!(" (line {line})")
        });
        InputError::new(format!(
            "{}: {msg}{}",
            path.display(),
            at.unwrap_or_default()
        ))
    })?;
    let origin = path.display().to_string();
    let num = |field: &str, v: f64, min: f64| -> Result<(), InputError> {
        if !v.is_finite() || v < min {
            Err(InputError::new(format!(
                "{origin}: {field}: must be a finite number ≥ {min}, got {v}"
            )))
        } else {
            Ok(())
        }
    };
    if let Some(d) = s.channel.distance_km {
        num("channel.distance_km", d, 0.0)?;
    }
    if let Some(l) = s.channel.loss_db {
        num("channel.loss_db", l, 0.0)?;
    }
    num(
        "channel.fibre_loss_db_per_km",
        s.channel.fibre_loss_db_per_km,
        0.0,
    )?;
    num("channel.extra_loss_db", s.channel.extra_loss_db, 0.0)?;
    if let Some(fk) = &s.finite_key {
        fk.validate()
            .map_err(|e| InputError::new(format!("{origin}: {}: {}", e.field, e.reason)))?;
    }
    for (i, r) in s.references.iter().enumerate() {
        if r.loss_db.is_none() && r.distance_km.is_none() {
            return Err(InputError::new(format!(
                "{origin}: reference[{i}]: needs loss_db or distance_km"
            )));
        }
        num(&format!("reference[{i}].value"), r.value, f64::MIN)?;
    }
    Ok(s)
}

/// The `[emulator]` table as a family's emulation settings (defaults when absent).
pub fn emulator_settings<T: for<'de> Deserialize<'de> + Default>(
    t: &Option<toml::Table>,
    origin: &str,
) -> Result<T, InputError> {
    match t {
        Some(t) => T::deserialize(toml::Value::Table(t.clone())).map_err(|e| {
            InputError::new(format!(
                "{origin}: [emulator]: {}",
                e.to_string().trim().replace('\n', " ")
            ))
        }),
        None => Ok(T::default()),
    }
}
