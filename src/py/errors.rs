//! Maps the crate's one error enum onto the exception classes defined in `ecomlogs/exceptions.py`: every
//! error a user can get is an `EcomlogsError`.

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;

use crate::error::Error;
use crate::kafka::code_name;

fn exception<'py>(py: Python<'py>, class: &str, message: String) -> PyResult<Bound<'py, PyAny>> {
    let module = py.import("ecomlogs.exceptions")?;
    module.getattr(class)?.call1((message,))
}

pub fn to_pyerr(err: Error) -> PyErr {
    Python::attach(|py| {
        let built = match &err {
            Error::Interrupted => return PyKeyboardInterrupt::new_err("interrupted"),
            Error::Io(e) => exception(py, "ResourceError", e.to_string()),
            Error::Config(m) => exception(py, "ConfigError", m.clone()),
            Error::Internal(m) => exception(py, "InternalError", m.clone()),
            Error::Kafka { code, .. } => {
                exception(py, "KafkaError", err.to_string()).and_then(|e| {
                    e.setattr("code", code.map(code_name))?;
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
