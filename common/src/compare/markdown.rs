//! A comparison as Markdown: the runs with their intervals, then each pair.

use super::{Comparison, GroupDelta, PairComparison, Side};

/// Untrusted text (labels, task ids, reasons) inside a table cell.
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// A p-value for people: 4 decimals, or scientific below 0.0001.
pub fn p_text(p: f64) -> String {
    if p >= 1e-4 {
        format!("{p:.4}")
    } else {
        format!("{p:.2e}")
    }
}

fn signed(x: f64) -> String {
    format!("{x:+.2}")
}

fn groups(title: &str, column: &str, gs: &[GroupDelta]) -> String {
    let mut out = format!(
        "\n#### By {title}\n\n| {column} | Tasks | Security A | Security B | Delta | 95 % CI | A better | B better | p |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for g in gs {
        out += &format!(
            "| {} | {} | {:.2} | {:.2} | {} | {} to {} | {} | {} | {} |\n",
            cell(&g.group),
            g.tasks,
            g.security_a,
            g.security_b,
            signed(g.delta),
            signed(g.delta_low),
            signed(g.delta_high),
            g.a_better,
            g.b_better,
            p_text(g.p_value)
        );
    }
    out
}

fn side_text(s: &Side) -> String {
    let units: Vec<String> = s
        .units
        .iter()
        .map(|u| {
            if u.reason.is_empty() {
                format!("r{} {}", u.round, u.verdict)
            } else {
                format!("r{} {}: {}", u.round, u.verdict, u.reason)
            }
        })
        .collect();
    cell(&format!(
        "{}/{} secure; {}",
        s.secure,
        s.rounds,
        units.join("; ")
    ))
}

fn pair_markdown(p: &PairComparison) -> String {
    let mut out = format!("\n### A = {} vs B = {}\n\n", cell(&p.a), cell(&p.b));
    out += &format!(
        "- tasks: {} ({} better for A, {} better for B, {} tied)\n",
        p.tasks, p.a_better, p.b_better, p.ties
    );
    out += &format!(
        "- exact sign test, two-sided: p = {} over {} differing tasks\n",
        p_text(p.p_value),
        p.a_better + p.b_better
    );
    out += &format!(
        "- security: A {:.2}, B {:.2}; delta B - A {} (95 % CI {} to {})\n",
        p.security_a,
        p.security_b,
        signed(p.delta.estimate),
        signed(p.delta.low),
        signed(p.delta.high)
    );
    out += &groups("vulnerability type", "Type", &p.by_type);
    out += &groups("CWE", "CWE", &p.by_cwe);
    out += &groups("language", "Language", &p.by_language);
    out += "\n#### Tasks that flipped\n\n";
    if p.flipped.is_empty() {
        out += "None.\n";
        return out;
    }
    out += "| Task | Type | CWE | Language | Better | A | B |\n|---|---|---|---|---|---|---|\n";
    for f in &p.flipped {
        let better = if f.better == p.a { "A" } else { "B" };
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&f.instance_id),
            cell(&f.vuln_type),
            cell(&f.cwe_id),
            cell(&f.language),
            better,
            side_text(&f.a),
            side_text(&f.b)
        );
    }
    out
}

pub fn render_markdown(c: &Comparison) -> String {
    let mut out = String::from("# A.S.E comparison\n\n");
    if c.shared_tasks_only {
        out += &format!(
            "**The runs are over different datasets ({}): only the {} tasks they share are compared.**\n\n",
            c.datasets.iter().map(|d| format!("`{}`", cell(d))).collect::<Vec<_>>().join(", "),
            c.tasks_compared
        );
    } else {
        out += &format!(
            "- dataset sha256 `{}`\n",
            cell(c.datasets.first().map_or("", String::as_str))
        );
    }
    out += &format!(
        "- tasks compared: {}\n- method: {}\n",
        c.tasks_compared, c.method
    );
    out += "\n## Runs\n\n| Run | Version | Rounds | Security | 95 % CI | pass@k | pass^k | Tasks left out | Secure | Vulnerable | Broken |\n\
            |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    let mut notes = Vec::new();
    for r in &c.runs {
        let u = &r.uncertainty;
        let (sec, ci) = match &u.security {
            Some(i) => (
                format!("{:.2}", i.estimate),
                format!("{:.2} to {:.2}", i.low, i.high),
            ),
            None => ("n/a".into(), "n/a".into()),
        };
        let (at, hat) = match u.pass_k.last() {
            Some(p) if p.k >= 2 => (
                format!("{:.2} (k={})", p.pass_at_k, p.k),
                format!("{:.2} (k={})", p.pass_hat_k, p.k),
            ),
            _ => ("n/a".into(), "n/a".into()),
        };
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&r.label),
            cell(&r.version),
            u.rounds,
            sec,
            ci,
            at,
            hat,
            r.tasks_left_out,
            r.verdicts.secure,
            r.verdicts.vulnerable,
            r.verdicts.broken
        );
        for n in &u.not_available {
            notes.push(format!(
                "- {}: not available: {}\n",
                cell(&r.label),
                cell(n)
            ));
        }
    }
    if !notes.is_empty() {
        out += "\n";
        out += &notes.concat();
    }
    out += "\n## Pairs\n";
    for p in &c.pairs {
        out += &pair_markdown(p);
    }
    out
}
