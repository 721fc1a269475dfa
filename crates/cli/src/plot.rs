//! SVG plot of key rate against distance or loss, with the repeaterless bounds.

use plotters::prelude::*;
use qkdnet_keyrate::Row;

/// Draws key per pulse, PLOB and TGW on a log scale against distance (or loss).
pub fn draw(path: &std::path::Path, title: &str, rows: &[Row]) -> Result<(), String> {
    let by_distance = rows.iter().all(|r| r.distance_km.is_some());
    let xs: Vec<f64> = rows
        .iter()
        .map(|r| {
            if by_distance {
                r.distance_km.unwrap_or(0.0)
            } else {
                r.loss_db
            }
        })
        .collect();
    let (x0, x1) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let positive = rows
        .iter()
        .flat_map(|r| [r.key_rate_per_pulse, r.plob_per_pulse])
        .filter(|v| *v > 0.0 && v.is_finite());
    let (lo, hi) = positive.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo < hi {
        (lo / 2.0, (hi * 4.0).min(1e3))
    } else {
        (1e-12, 10.0)
    };
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(if by_distance {
            "distance (km)"
        } else {
            "loss (dB)"
        })
        .y_desc("secret bits per channel use")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()
        .map_err(|e| e.to_string())?;
    let series = |f: &dyn Fn(&Row) -> f64| -> Vec<(f64, f64)> {
        xs.iter()
            .zip(rows)
            .map(|(&x, r)| (x, f(r)))
            .filter(|(_, y)| *y > 0.0 && y.is_finite())
            .collect()
    };
    chart
        .draw_series(LineSeries::new(
            series(&|r| r.key_rate_per_pulse),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?
        .label("qkdnet key rate")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(series(&|r| r.plob_per_pulse), RED))
        .map_err(|e| e.to_string())?
        .label("PLOB −log₂(1−η)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_series(LineSeries::new(
            series(&|r| r.tgw_per_pulse),
            BLACK.mix(0.5),
        ))
        .map_err(|e| e.to_string())?
        .label("TGW log₂((1+η)/(1−η))")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
