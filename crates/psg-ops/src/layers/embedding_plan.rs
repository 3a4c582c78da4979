//! The host-side grouping of an embedding's lookups that both backends follow: by table row, then by
//! sample, then by position. It fixes every summation order, so the CPU and the GPU agree bit for
//! bit, and it gives the sparse per-sample layout ([`SparseRows`](super::SparseRows)).

use psg_runtime::{Error, Result};

/// The lookups of one batch, grouped. Index tables are `i32` because the GPU kernel reads them.
pub(crate) struct Plan {
    /// Table row of each union row u (ascending): the rows anybody touched.
    pub union_rows: Vec<i32>,
    /// U + 1 offsets into the entries: entries of union row u are `entry_off[u]..entry_off[u+1]`.
    pub entry_off: Vec<i32>,
    /// The sample of each entry (one entry per (row, sample) pair), ascending within a row.
    pub entry_sample: Vec<i32>,
    /// Each entry's index in the sparse per-sample layout.
    pub entry_slot: Vec<i32>,
    /// E + 1 offsets into `toks`.
    pub tok_off: Vec<i32>,
    /// Flat positions `b * T + t` of each entry's lookups, ascending.
    pub toks: Vec<i32>,
    /// B + 1 offsets of each sample's rows in the sparse layout.
    pub offsets: Vec<usize>,
    /// The sparse layout's rows (each sample's ascending).
    pub rows: Vec<u32>,
}

fn as_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::Shape(format!(
            "embedding: {what} = {v} is larger than the kernel's 32-bit limit"
        ))
    })
}

impl Plan {
    /// Groups `indices` (`[B, T]`, row-major) of a table with `vocab` rows.
    pub fn new(indices: &[u32], b: usize, t: usize, vocab: usize) -> Result<Plan> {
        if let Some((pos, &bad)) = indices
            .iter()
            .enumerate()
            .find(|(_, &i)| i as usize >= vocab)
        {
            return Err(Error::InvalidParameter(format!(
                "embedding: index {bad} at position {pos} (sample {}) is outside the table of {vocab} rows",
                pos / t.max(1)
            )));
        }
        as_i32("B * T", indices.len())?;
        as_i32("the vocabulary size", vocab)?;
        let mut order: Vec<(u32, usize)> =
            indices.iter().enumerate().map(|(p, &r)| (r, p)).collect();
        order.sort_unstable();

        let mut plan = Plan {
            union_rows: Vec::new(),
            entry_off: vec![0],
            entry_sample: Vec::new(),
            entry_slot: Vec::new(),
            tok_off: vec![0],
            toks: Vec::with_capacity(order.len()),
            offsets: vec![0; b + 1],
            rows: Vec::new(),
        };
        let mut entry_row = Vec::new();
        let mut last: Option<(u32, usize)> = None;
        for &(row, pos) in &order {
            let sample = pos / t;
            if last.map(|(r, _)| r) != Some(row) {
                plan.union_rows.push(row as i32);
                if !plan.entry_sample.is_empty() {
                    plan.entry_off.push(plan.entry_sample.len() as i32);
                }
            }
            if last != Some((row, sample)) {
                if !plan.entry_sample.is_empty() {
                    plan.tok_off.push(plan.toks.len() as i32);
                }
                plan.entry_sample.push(sample as i32);
                entry_row.push(row);
                plan.offsets[sample + 1] += 1;
            }
            plan.toks.push(pos as i32);
            last = Some((row, sample));
        }
        if !plan.entry_sample.is_empty() {
            plan.entry_off.push(plan.entry_sample.len() as i32);
            plan.tok_off.push(plan.toks.len() as i32);
        }
        for s in 0..b {
            plan.offsets[s + 1] += plan.offsets[s];
        }
        // Entries come in ascending row order, so each sample's slots fill in ascending row order.
        let mut fill = plan.offsets.clone();
        plan.rows = vec![0; plan.entry_sample.len()];
        plan.entry_slot = Vec::with_capacity(plan.entry_sample.len());
        for (&sample, &row) in plan.entry_sample.iter().zip(&entry_row) {
            let slot = &mut fill[sample as usize];
            plan.rows[*slot] = row;
            plan.entry_slot.push(*slot as i32);
            *slot += 1;
        }
        Ok(plan)
    }

    /// U, the number of distinct rows looked up.
    pub fn n_union(&self) -> usize {
        self.union_rows.len()
    }

    /// E, the number of (row, sample) pairs: the rows of the sparse layout.
    pub fn n_entries(&self) -> usize {
        self.entry_sample.len()
    }

    /// The entries of union row `u`.
    pub fn entries(&self, u: usize) -> std::ops::Range<usize> {
        self.entry_off[u] as usize..self.entry_off[u + 1] as usize
    }

    /// The flat positions entry `e` looked up.
    pub fn positions(&self, e: usize) -> &[i32] {
        &self.toks[self.tok_off[e] as usize..self.tok_off[e + 1] as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_row_then_sample_then_position() {
        // B = 2, T = 3: sample 0 looks up 5, 1, 5; sample 1 looks up 1, 1, 7.
        let plan = Plan::new(&[5, 1, 5, 1, 1, 7], 2, 3, 8).unwrap();
        assert_eq!(plan.union_rows, [1, 5, 7]);
        assert_eq!(plan.entry_off, [0, 2, 3, 4]);
        assert_eq!(plan.entry_sample, [0, 1, 0, 1]);
        assert_eq!(plan.tok_off, [0, 1, 3, 5, 6]);
        assert_eq!(plan.toks, [1, 3, 4, 0, 2, 5]);
        assert_eq!(plan.offsets, [0, 2, 4]);
        assert_eq!(plan.rows, [1, 5, 1, 7]);
        assert_eq!(plan.entry_slot, [0, 2, 1, 3]);
    }

    #[test]
    fn out_of_range_index_is_an_error() {
        assert!(matches!(
            Plan::new(&[0, 9], 1, 2, 9),
            Err(Error::InvalidParameter(_))
        ));
    }
}
