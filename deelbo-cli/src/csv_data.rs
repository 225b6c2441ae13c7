//! Reading numeric CSV files with a header row, with errors that name the file, line and column.

use std::path::{Path, PathBuf};

use deelbo_rff::RffError;
use deelbo_rff::data::{BlockFn, RowSource};
use ndarray::{Array1, Array2};
use thiserror::Error;

/// What can be wrong with a CSV file.
#[derive(Debug, Error)]
pub enum CsvError {
    /// The file cannot be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CSV parser failed (bad quoting, invalid UTF-8, ...).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// No header row.
    #[error("{path}: the file is empty (a header row naming the columns is required)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Two columns share a name.
    #[error("{path}: the header names column '{name}' twice")]
    DuplicateColumn {
        /// The file.
        path: PathBuf,
        /// The repeated name.
        name: String,
    },
    /// A row with a different number of fields than the header.
    #[error("{path}: line {line} has {found} fields but the header has {expected}")]
    Ragged {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Fields in the header.
        expected: usize,
        /// Fields in the row.
        found: usize,
    },
    /// A required column is missing.
    #[error("{path}: no column named '{name}' (columns: {available})")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        name: String,
        /// The header, comma separated.
        available: String,
    },
    /// A cell that is not a number.
    #[error("{path}: line {line}, column '{column}': '{cell}' is not a number")]
    NotNumeric {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Column name.
        column: String,
        /// The cell's text.
        cell: String,
    },
    /// NaN or an infinity.
    #[error(
        "{path}: line {line}, column '{column}': '{cell}' is not a finite number (NaN and infinities are not allowed)"
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Column name.
        column: String,
        /// The cell's text.
        cell: String,
    },
    /// Too few data rows.
    #[error("{path}: needs at least {required} data rows below the header, found {found}")]
    TooFewRows {
        /// The file.
        path: PathBuf,
        /// Minimum.
        required: usize,
        /// Found.
        found: usize,
    },
    /// Only the target column.
    #[error("{path}: no input columns besides the target '{target}'")]
    NoInputs {
        /// The file.
        path: PathBuf,
        /// The target column.
        target: String,
    },
    /// The target never changes.
    #[error(
        "{path}: the target column '{target}' is constant (every value is {value}); there is nothing to learn"
    )]
    ConstantTarget {
        /// The file.
        path: PathBuf,
        /// The target column.
        target: String,
        /// Its only value.
        value: f64,
    },
}

/// A CSV file's header and rows, as text, with each row's line number.
struct RawTable {
    path: PathBuf,
    headers: Vec<String>,
    rows: Vec<(u64, Vec<String>)>,
}

fn read_raw(path: &Path) -> Result<RawTable, CsvError> {
    let file = std::fs::File::open(path).map_err(|source| CsvError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(file);
    let mut records = reader.records();
    let parse_err = |e: csv::Error| match e.kind() {
        csv::ErrorKind::Io(err) => CsvError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(err.kind(), err.to_string()),
        },
        _ => CsvError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    };
    let header = match records.next() {
        Some(r) => r.map_err(parse_err)?,
        None => {
            return Err(CsvError::Empty {
                path: path.to_path_buf(),
            });
        }
    };
    let headers: Vec<String> = header.iter().map(str::to_string).collect();
    if headers.iter().all(String::is_empty) {
        return Err(CsvError::Empty {
            path: path.to_path_buf(),
        });
    }
    for (i, h) in headers.iter().enumerate() {
        if headers[..i].contains(h) {
            return Err(CsvError::DuplicateColumn {
                path: path.to_path_buf(),
                name: h.clone(),
            });
        }
    }
    let mut rows = Vec::new();
    for record in records {
        let record = record.map_err(parse_err)?;
        let line = record.position().map_or(0, |p| p.line());
        // Skip blank lines (a trailing newline, an empty line at the end).
        if record.len() == 1 && record.get(0).is_some_and(str::is_empty) {
            continue;
        }
        if record.len() != headers.len() {
            return Err(CsvError::Ragged {
                path: path.to_path_buf(),
                line,
                expected: headers.len(),
                found: record.len(),
            });
        }
        rows.push((line, record.iter().map(str::to_string).collect()));
    }
    Ok(RawTable {
        path: path.to_path_buf(),
        headers,
        rows,
    })
}

impl RawTable {
    fn column(&self, name: &str) -> Result<usize, CsvError> {
        self.headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| CsvError::MissingColumn {
                path: self.path.clone(),
                name: name.to_string(),
                available: self.headers.join(", "),
            })
    }

    /// The numeric matrix of the given columns (rows x columns).
    fn numeric(&self, columns: &[usize]) -> Result<Array2<f64>, CsvError> {
        let mut out = Array2::zeros((self.rows.len(), columns.len()));
        for (i, (line, row)) in self.rows.iter().enumerate() {
            for (j, &c) in columns.iter().enumerate() {
                let cell = &row[c];
                let value: f64 = cell.parse().map_err(|_| CsvError::NotNumeric {
                    path: self.path.clone(),
                    line: *line,
                    column: self.headers[c].clone(),
                    cell: cell.clone(),
                })?;
                if !value.is_finite() {
                    return Err(CsvError::NonFinite {
                        path: self.path.clone(),
                        line: *line,
                        column: self.headers[c].clone(),
                        cell: cell.clone(),
                    });
                }
                out[[i, j]] = value;
            }
        }
        Ok(out)
    }
}

/// Training data from a CSV: the target column and every other column as an input.
#[derive(Debug)]
pub struct TrainingTable {
    /// Input column names, in file order.
    pub inputs: Vec<String>,
    /// Inputs, `N x d`.
    pub x: Array2<f64>,
    /// Targets, `N`.
    pub y: Array1<f64>,
}

/// Read training data: header required, `target` must exist, every cell numeric and finite,
/// at least 2 rows, at least one input column, and a target that is not constant.
pub fn read_training(path: &Path, target: &str) -> Result<TrainingTable, CsvError> {
    let raw = read_raw(path)?;
    let t = raw.column(target)?;
    let input_idx: Vec<usize> = (0..raw.headers.len()).filter(|&c| c != t).collect();
    if input_idx.is_empty() {
        return Err(CsvError::NoInputs {
            path: raw.path.clone(),
            target: target.to_string(),
        });
    }
    if raw.rows.len() < 2 {
        return Err(CsvError::TooFewRows {
            path: raw.path.clone(),
            required: 2,
            found: raw.rows.len(),
        });
    }
    // Check every cell in file order (so the first bad cell is the one reported).
    let all: Vec<usize> = (0..raw.headers.len()).collect();
    let table = raw.numeric(&all)?;
    let y = table.column(t).to_owned();
    let x = table.select(ndarray::Axis(1), &input_idx);
    if y.iter().all(|&v| v == y[0]) {
        return Err(CsvError::ConstantTarget {
            path: raw.path.clone(),
            target: target.to_string(),
            value: y[0],
        });
    }
    Ok(TrainingTable {
        inputs: input_idx.iter().map(|&c| raw.headers[c].clone()).collect(),
        x,
        y,
    })
}

/// Read prediction inputs: the named columns (any order in the file; other columns, such as the
/// target, are ignored), every used cell numeric and finite, at least one row.
pub fn read_inputs(path: &Path, inputs: &[String]) -> Result<Array2<f64>, CsvError> {
    let raw = read_raw(path)?;
    let idx = inputs
        .iter()
        .map(|name| raw.column(name))
        .collect::<Result<Vec<_>, _>>()?;
    if raw.rows.is_empty() {
        return Err(CsvError::TooFewRows {
            path: raw.path.clone(),
            required: 1,
            found: 0,
        });
    }
    raw.numeric(&idx)
}

/// A training CSV read block by block (never held in memory): the [`RowSource`] that
/// `deelbo rff fit` streams over. [`CsvSource::open`] validates the whole file in one streaming
/// pass first (every check and message of [`read_training`]), so later passes only fail if the
/// file changes underneath; such an error is kept in [`CsvSource::take_error`].
pub struct CsvSource {
    path: PathBuf,
    headers: Vec<String>,
    target: usize,
    inputs: Vec<usize>,
    rows: usize,
    error: Option<CsvError>,
}

/// The callback of [`CsvSource`]'s reader: row-major inputs and targets of one block.
type RawBlockFn<'f> = dyn FnMut(&[f64], &[f64]) -> Result<(), CsvError> + 'f;

/// Rows per block handed to the fit.
pub const CSV_BLOCK_ROWS: usize = 4096;

fn open_reader(path: &Path) -> Result<csv::Reader<std::io::BufReader<std::fs::File>>, CsvError> {
    let file = std::fs::File::open(path).map_err(|source| CsvError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .buffer_capacity(1 << 20)
        .from_reader(std::io::BufReader::with_capacity(1 << 20, file)))
}

fn csv_error(path: &Path, e: csv::Error) -> CsvError {
    match e.kind() {
        csv::ErrorKind::Io(err) => CsvError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(err.kind(), err.to_string()),
        },
        _ => CsvError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    }
}

impl CsvSource {
    /// Open and validate `path` with target column `target` (one streaming pass).
    pub fn open(path: &Path, target: &str) -> Result<Self, CsvError> {
        let mut reader = open_reader(path)?;
        let mut record = csv::StringRecord::new();
        let has_header = reader
            .read_record(&mut record)
            .map_err(|e| csv_error(path, e))?;
        let headers: Vec<String> = record.iter().map(str::to_string).collect();
        if !has_header || headers.iter().all(String::is_empty) {
            return Err(CsvError::Empty {
                path: path.to_path_buf(),
            });
        }
        for (i, h) in headers.iter().enumerate() {
            if headers[..i].contains(h) {
                return Err(CsvError::DuplicateColumn {
                    path: path.to_path_buf(),
                    name: h.clone(),
                });
            }
        }
        let t =
            headers
                .iter()
                .position(|h| h == target)
                .ok_or_else(|| CsvError::MissingColumn {
                    path: path.to_path_buf(),
                    name: target.to_string(),
                    available: headers.join(", "),
                })?;
        let inputs: Vec<usize> = (0..headers.len()).filter(|&c| c != t).collect();
        if inputs.is_empty() {
            return Err(CsvError::NoInputs {
                path: path.to_path_buf(),
                target: target.to_string(),
            });
        }
        let mut source = Self {
            path: path.to_path_buf(),
            headers,
            target: t,
            inputs,
            rows: 0,
            error: None,
        };
        let mut first: Option<f64> = None;
        let mut constant = true;
        let mut rows = 0usize;
        source.stream(&mut |_, y| {
            for &v in y {
                match first {
                    None => first = Some(v),
                    Some(f) if f != v => constant = false,
                    _ => {}
                }
            }
            rows += y.len();
            Ok(())
        })?;
        if rows < 2 {
            return Err(CsvError::TooFewRows {
                path: path.to_path_buf(),
                required: 2,
                found: rows,
            });
        }
        if constant {
            return Err(CsvError::ConstantTarget {
                path: path.to_path_buf(),
                target: target.to_string(),
                value: first.unwrap_or(0.0),
            });
        }
        source.rows = rows;
        Ok(source)
    }

    /// The input column names, in file order.
    pub fn inputs(&self) -> Vec<String> {
        self.inputs
            .iter()
            .map(|&c| self.headers[c].clone())
            .collect()
    }

    /// Data rows (below the header).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The CSV error that stopped the last visit, if any.
    pub fn take_error(&mut self) -> Option<CsvError> {
        self.error.take()
    }

    /// Read every row, checking cells in file order, calling `block(x, y)` every
    /// [`CSV_BLOCK_ROWS`] rows (`x` row-major `rows x d`).
    fn stream(&self, block: &mut RawBlockFn<'_>) -> Result<(), CsvError> {
        let mut reader = open_reader(&self.path)?;
        let mut record = csv::StringRecord::new();
        reader
            .read_record(&mut record)
            .map_err(|e| csv_error(&self.path, e))?;
        let d = self.inputs.len();
        let mut xs: Vec<f64> = Vec::with_capacity(CSV_BLOCK_ROWS * d);
        let mut ys: Vec<f64> = Vec::with_capacity(CSV_BLOCK_ROWS);
        let mut row = vec![0.0f64; self.headers.len()];
        while reader
            .read_record(&mut record)
            .map_err(|e| csv_error(&self.path, e))?
        {
            let line = record.position().map_or(0, |p| p.line());
            if record.len() == 1 && record.get(0).is_some_and(str::is_empty) {
                continue;
            }
            if record.len() != self.headers.len() {
                return Err(CsvError::Ragged {
                    path: self.path.clone(),
                    line,
                    expected: self.headers.len(),
                    found: record.len(),
                });
            }
            for (c, cell) in record.iter().enumerate() {
                let value: f64 = cell.parse().map_err(|_| CsvError::NotNumeric {
                    path: self.path.clone(),
                    line,
                    column: self.headers[c].clone(),
                    cell: cell.to_string(),
                })?;
                if !value.is_finite() {
                    return Err(CsvError::NonFinite {
                        path: self.path.clone(),
                        line,
                        column: self.headers[c].clone(),
                        cell: cell.to_string(),
                    });
                }
                row[c] = value;
            }
            xs.extend(self.inputs.iter().map(|&c| row[c]));
            ys.push(row[self.target]);
            if ys.len() == CSV_BLOCK_ROWS {
                block(&xs, &ys)?;
                xs.clear();
                ys.clear();
            }
        }
        if !ys.is_empty() {
            block(&xs, &ys)?;
        }
        Ok(())
    }
}

impl RowSource for CsvSource {
    fn dim(&self) -> usize {
        self.inputs.len()
    }

    fn visit(&mut self, block: &mut BlockFn<'_>) -> deelbo_rff::Result<()> {
        let d = self.inputs.len();
        let mut inner: Option<RffError> = None;
        let result = self.stream(&mut |xs, ys| {
            let x = ndarray::ArrayView2::from_shape((ys.len(), d), xs).map_err(|e| {
                CsvError::Parse {
                    path: PathBuf::new(),
                    message: e.to_string(),
                }
            })?;
            block(x, ndarray::ArrayView1::from(ys)).map_err(|e| {
                inner = Some(e);
                CsvError::Parse {
                    path: PathBuf::new(),
                    message: "stopped by the fit".to_string(),
                }
            })
        });
        if let Some(e) = inner {
            return Err(e);
        }
        result.map_err(|e| {
            let message = e.to_string();
            self.error = Some(e);
            RffError::InvalidConfig {
                name: "training data".to_string(),
                reason: message,
            }
        })
    }
}
