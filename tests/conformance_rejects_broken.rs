//! Broken toy backends the conformance suite must reject, each by the check that names its rule.
