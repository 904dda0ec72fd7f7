//! Maps the crate's one error enum onto the exception classes defined in `ecomlogs/exceptions.py`.

use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError};
use pyo3::prelude::*;

use crate::error::Error;

fn exception<'py>(py: Python<'py>, class: &str, message: String) -> PyResult<Bound<'py, PyAny>> {
    let module = py.import("ecomlogs.exceptions")?;
    module.getattr(class)?.call1((message,))
}

pub fn to_pyerr(err: Error) -> PyErr {
    Python::attach(|py| {
        let built = match &err {
            Error::Interrupted => return PyKeyboardInterrupt::new_err("interrupted"),
            Error::Io(e) => return PyOSError::new_err(e.to_string()),
            Error::Config(m) => exception(py, "ConfigError", m.clone()),
            Error::Internal(m) => exception(py, "InternalError", m.clone()),
            Error::Kafka { code, .. } => {
                exception(py, "KafkaError", err.to_string()).and_then(|e| {
                    e.setattr("code", code.map(|c| format!("{c:?}")))?;
                    Ok(e)
                })
            }
            Error::Database { sqlstate, .. } => exception(py, "DatabaseError", err.to_string())
                .and_then(|e| {
                    e.setattr("sqlstate", sqlstate.clone())?;
                    Ok(e)
                }),
        };
        match built {
            Ok(instance) => PyErr::from_value(instance),
            Err(import_failure) => import_failure,
        }
    })
}
