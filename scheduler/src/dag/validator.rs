//! The collector of one file's errors, shared by the checks in `validate` and `fields`.

use std::collections::{BTreeMap, HashMap};

use crate::dag::basic::ParamValue;
use crate::dag::error::DagError;
use crate::dag::values::closest;

/// Suggestions cost an edit distance against every candidate; once this many candidates
/// have been compared, a file full of mistakes gets its errors without suggestions.
const SUGGESTION_BUDGET: usize = 200_000;

/// Collects the errors found while checking one file.
pub(crate) struct Validator<'s> {
    /// The file text, to quote values as written.
    pub(crate) source: &'s str,
    pub(super) errors: Vec<DagError>,
    pub(super) params: BTreeMap<String, ParamValue>,
    /// Template text → its references, or its syntax error; DAGs repeat templates a lot.
    pub(super) templates: HashMap<String, Result<Vec<String>, String>>,
    suggestion_budget: usize,
}

impl<'s> Validator<'s> {
    pub(crate) fn new(source: &'s str) -> Self {
        Validator {
            source,
            errors: Vec::new(),
            params: BTreeMap::new(),
            templates: HashMap::new(),
            suggestion_budget: SUGGESTION_BUDGET,
        }
    }

    pub(crate) fn push(&mut self, error: DagError) {
        self.errors.push(error);
    }

    pub(super) fn suggest<'a>(
        &mut self,
        target: &str,
        candidates: impl ExactSizeIterator<Item = &'a str>,
    ) -> Option<String> {
        let work = candidates.len();
        if work > self.suggestion_budget {
            return None;
        }
        self.suggestion_budget -= work;
        closest(target, candidates)
    }
}
