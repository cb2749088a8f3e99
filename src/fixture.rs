//! An example category set, used by the docs, tests, benchmarks and the demo.
//!
//! These six categories are the ones of the JSON envelope layout the Redis
//! backend reads and writes by default. They are an example: the library has
//! no categories of its own, and an application declares its own enum with
//! [`categories!`](crate::categories).

crate::categories! {
    /// Six example categories of a personal-finance application.
    pub enum ExampleCategory {
        /// Synchronisation of account data.
        DataSync = "data_sync",
        /// Events from an external data provider.
        Provider = "provider",
        /// Results of AI analyses.
        Ai = "ai",
        /// Progress of imports.
        Import = "import",
        /// Portfolio changes.
        Portfolio = "portfolio",
        /// Security notices.
        Security = "security",
    }
}
