//! Requests checked against the model, and batches joined and split (pure).

use std::collections::BTreeMap;

use crate::executor::{InferError, InferRequest, ModelMetadata, TensorMeta};
use crate::registry::ModelSpec;
use crate::tensor::{DataType, Tensor, TensorData};

fn bad(message: String) -> InferError {
    InferError::BadRequest(message)
}

fn shape_fits(declared: &[i64], given: &[usize]) -> bool {
    declared.len() == given.len()
        && declared.iter().zip(given).all(|(&want, &have)| want < 0 || usize::try_from(want).is_ok_and(|w| w == have))
}

/// True when every input has a dynamic leading dimension, so requests can
/// be joined along axis 0.
pub fn batchable(metadata: &ModelMetadata) -> bool {
    !metadata.inputs.is_empty() && metadata.inputs.iter().all(|input| input.shape.first().is_some_and(|&d| d < 0))
}

/// Checks `request` against the model and puts its inputs in the model's
/// order. Returns the rows it adds to a batch (1 when batching is off).
pub fn validate_request(
    spec: &ModelSpec,
    metadata: &ModelMetadata,
    synthetic: bool,
    batching: bool,
    request: &mut InferRequest,
) -> Result<usize, InferError> {
    let model = &metadata.name;
    if request.inputs.is_empty() {
        return Err(bad(format!("the request has no inputs; model {model} takes {}", names(&metadata.inputs))));
    }
    let mut by_name: BTreeMap<String, Tensor> = BTreeMap::new();
    for tensor in std::mem::take(&mut request.inputs) {
        if by_name.contains_key(&tensor.name) {
            return Err(bad(format!("input {:?} is given twice", tensor.name)));
        }
        by_name.insert(tensor.name.clone(), tensor);
    }
    let ordered: Vec<Tensor> = if synthetic {
        by_name.into_values().collect()
    } else {
        let mut ordered = Vec::with_capacity(metadata.inputs.len());
        for declared in &metadata.inputs {
            let tensor = by_name.remove(&declared.name).ok_or_else(|| {
                bad(format!("input {:?} is missing; model {model} takes {}", declared.name, names(&metadata.inputs)))
            })?;
            check_input(declared, &tensor)?;
            ordered.push(tensor);
        }
        if let Some(extra) = by_name.keys().next() {
            return Err(bad(format!("model {model} has no input {extra:?}; it takes {}", names(&metadata.inputs))));
        }
        ordered
    };
    for wanted in &request.outputs {
        let known = if synthetic {
            ordered.iter().any(|t| &t.name == wanted)
        } else {
            metadata.outputs.iter().any(|o| &o.name == wanted)
        };
        if !known {
            return Err(bad(format!("model {model} has no output {wanted:?}")));
        }
    }
    let rows = request_rows(&ordered, batching)?;
    if batching && rows > spec.batch.max_batch_size {
        return Err(bad(format!(
            "batch dimension {rows} is above model {model}'s max_batch_size {}",
            spec.batch.max_batch_size
        )));
    }
    request.inputs = ordered;
    Ok(rows)
}

fn check_input(declared: &TensorMeta, tensor: &Tensor) -> Result<(), InferError> {
    if tensor.datatype() != declared.datatype {
        return Err(bad(format!(
            "input {:?} has datatype {}, the model expects {}",
            declared.name,
            tensor.datatype(),
            declared.datatype
        )));
    }
    if !shape_fits(&declared.shape, &tensor.shape) {
        return Err(bad(format!(
            "input {:?} has shape {:?}, the model expects {:?} (-1 is any size)",
            declared.name, tensor.shape, declared.shape
        )));
    }
    Ok(())
}

fn request_rows(inputs: &[Tensor], batching: bool) -> Result<usize, InferError> {
    if !batching {
        return Ok(1);
    }
    let rows = inputs[0].shape.first().copied().unwrap_or(0);
    if rows == 0 || inputs.iter().any(|t| t.shape.first().copied() != Some(rows)) {
        return Err(bad("every input needs the same leading (batch) dimension, at least 1".into()));
    }
    Ok(rows)
}

fn names(tensors: &[TensorMeta]) -> String {
    let list: Vec<String> = tensors.iter().map(|t| format!("{:?}", t.name)).collect();
    list.join(", ")
}

/// What must match for two requests to share a batch: names, datatypes
/// and every dimension but the first.
pub fn batch_key(inputs: &[Tensor]) -> Vec<(String, DataType, Vec<usize>)> {
    inputs.iter().map(|t| (t.name.clone(), t.datatype(), t.shape.iter().skip(1).copied().collect())).collect()
}

/// Joins the inputs of several requests along axis 0.
pub fn join_inputs(requests: &[&[Tensor]]) -> Result<Vec<Tensor>, InferError> {
    let first = requests.first().ok_or_else(|| InferError::Failed("empty batch".into()))?;
    let mut joined = Vec::with_capacity(first.len());
    for (index, template) in first.iter().enumerate() {
        let total_rows: usize = requests.iter().map(|inputs| inputs[index].rows()).sum();
        let total_len: usize = requests.iter().map(|inputs| inputs[index].data.len()).sum();
        let mut data = TensorData::with_capacity(template.datatype(), total_len);
        for inputs in requests {
            data.extend(&inputs[index].data).map_err(|error| InferError::Failed(error.to_string()))?;
        }
        let mut shape = template.shape.clone();
        if let Some(first_dim) = shape.first_mut() {
            *first_dim = total_rows;
        }
        joined.push(Tensor::new(template.name.clone(), shape, data).map_err(|e| InferError::Failed(e.to_string()))?);
    }
    Ok(joined)
}

/// Splits batched outputs back into one output set per request, by rows.
pub fn split_outputs(outputs: &[Tensor], rows: &[usize]) -> Result<Vec<Vec<Tensor>>, InferError> {
    let total: usize = rows.iter().sum();
    let mut per_request: Vec<Vec<Tensor>> = rows.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for output in outputs {
        if output.shape.first().copied() != Some(total) {
            return Err(InferError::Failed(format!(
                "output {:?} has shape {:?}, which does not follow the batch of {total}; set max_batch_size = 0 for this model",
                output.name, output.shape
            )));
        }
        let per_row = output.data.len() / total.max(1);
        let mut start_row = 0;
        for (index, &count) in rows.iter().enumerate() {
            let mut shape = output.shape.clone();
            shape[0] = count;
            let data = output.data.slice(start_row * per_row, (start_row + count) * per_row);
            per_request[index].push(Tensor { name: output.name.clone(), shape, data });
            start_row += count;
        }
    }
    Ok(per_request)
}

#[cfg(test)]
mod tests;
