//! The model summary printed when `fit` starts: the VarStore's top-level modules with their
//! parameter counts, and the totals, laid out and counted as Lightning's `ModelSummary`.

use tch::nn;

fn human(n: usize) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1} K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} M", n as f64 / 1e6),
        _ => format!("{:.1} B", n as f64 / 1e9),
    }
}

/// The counts behind the summary, as Lightning counts them: parameters only (buffers such as
/// batch-norm running statistics are not parameters), top-level modules in the order their first
/// parameter was created.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    /// Each module (a prefix of the variable paths, down to the summary's depth) and its
    /// parameter count, depth first.
    pub modules: Vec<(String, usize)>,
    /// Parameters that require grad.
    pub trainable: usize,
    /// Parameters that do not (frozen).
    pub non_trainable: usize,
    /// Megabytes of the parameters.
    pub size_mb: f64,
}

impl ModelSummary {
    /// The summary of `vs`: its top-level modules (Lightning's default `max_depth=1`).
    pub fn of(vs: &nn::VarStore) -> Self {
        Self::with_depth(vs, Some(1))
    }

    /// The summary of `vs` down to `max_depth` levels of nesting (`None`: every level), as
    /// Lightning's `ModelSummary(max_depth)`: a module is a prefix of the variable paths
    /// (`encoder`, `encoder.0`, …), listed depth first in the order their first parameter was
    /// created, with the parameters under it. (Modules without parameters, which tch does not
    /// record, are not listed.)
    pub fn with_depth(vs: &nn::VarStore, max_depth: Option<usize>) -> Self {
        // The VarStore keeps its parameters in creation order, without names; the names come
        // from the named variables holding the same storage.
        let named = vs.variables();
        let name_of = |p: &tch::Tensor| {
            named.iter().find(|(_, t)| t.data_ptr() == p.data_ptr() && t.size() == p.size()).map(|(n, _)| n.clone())
        };
        let mut modules: Vec<(String, usize)> = Vec::new();
        let (mut trainable, mut non_trainable, mut bytes) = (0, 0, 0);
        for p in vs.trainable_variables() {
            let n = p.numel();
            let name = name_of(&p).unwrap_or_default();
            let parts: Vec<&str> = name.split('.').collect();
            // The modules holding this parameter: every prefix but the parameter's own name
            // (a variable at the top level is its own row).
            let levels = parts.len().saturating_sub(1).max(1);
            for depth in 1..=levels.min(max_depth.unwrap_or(usize::MAX)) {
                let module = parts[..depth].join(".");
                match modules.iter_mut().find(|(m, _)| *m == module) {
                    Some((_, count)) => *count += n,
                    None => modules.push((module, n)),
                }
            }
            if p.requires_grad() {
                trainable += n
            } else {
                non_trainable += n
            }
            bytes += n * p.kind().elt_size_in_bytes();
        }
        ModelSummary { modules, trainable, non_trainable, size_mb: bytes as f64 / 1e6 }
    }

    /// The table, as printed.
    pub fn table(&self) -> String {
        let name_w = self.modules.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
        let idx_w = self.modules.len().saturating_sub(1).to_string().len();
        let rows: Vec<String> = self
            .modules
            .iter()
            .enumerate()
            .map(|(i, (n, c))| format!("{i:>idx_w$} | {n:<name_w$} | {}", human(*c)))
            .collect();
        let header = format!("{:>idx_w$} | {:<name_w$} | Params", "", "Name");
        let rule = "-".repeat(rows.iter().map(String::len).chain([header.len()]).max().unwrap_or(0));
        let total = self.trainable + self.non_trainable;
        let mut out = vec![header, rule.clone()];
        out.extend(rows);
        out.push(rule);
        out.push(format!("{:<10}Trainable params", human(self.trainable)));
        out.push(format!("{:<10}Non-trainable params", human(self.non_trainable)));
        out.push(format!("{:<10}Total params", human(total)));
        out.push(format!("{:<10.3}Total estimated model params size (MB)", self.size_mb));
        out.join("\n")
    }
}
