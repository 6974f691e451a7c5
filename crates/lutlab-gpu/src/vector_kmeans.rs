//! Vector look-up tables' k-means on the GPU (issue 20): the CPU reference's fit
//! (`lutlab_core::quant::vector::fit`) with the assignment, its O(n·k·d) part, in WGSL
//! (`shaders/vector_kmeans_assign.wgsl`).
//!
//! Every table's restarts start from the reference's own k-means++ centres
//! (`vector::starts`, on the host) and run at once; after each assignment the host reads the codes
//! and distances back and `vector::Lloyd::advance` updates the centres in f64 exactly as the CPU
//! does (O(n·d), and the empty-entry rule needs a sort). So the only difference from the CPU fit is
//! the shader's f32 distance compares: a vector within an f32 rounding of two entries' distances
//! (a near-tie) may take the other one. The best restart's centres then go through the same
//! `VectorProblems::finish` as the CPU's, which re-codes every vector in f64.
//!
//! Why the update stays on the host: codebooks reach 2^12 entries, too many for per-workgroup
//! partial sums in WebGPU's 16 KiB of workgroup memory without float atomics, while the host's
//! pass over n·d values costs about what reading the codes back does.

use crate::kmeans::{empty_buffer, entries, grid, kernels, parallel_map, upload};
use crate::util::{f32_bytes, read_staging, scoped, to_f32, to_u32, u32_bytes};
use lutlab_core::quant::vector::{starts, Lloyd, VectorFit, VectorPoints, VectorProblems, VectorSettings};
use lutlab_model::{Gpu, ModelError, Result};

/// Points per workgroup of the assignment (one invocation each).
const WG: usize = 64;

/// The fitted centres (`[entries][dim]`) of every table of `problems`: per table the best of
/// `settings.restarts` runs, as `vector::fit` picks it.
pub async fn fit_vector_tables_gpu(gpu: &Gpu, problems: &VectorProblems, settings: &VectorSettings) -> Result<Vec<Vec<f64>>> {
    let k = problems.entries;
    let initial: Vec<Vec<Vec<f64>>> =
        parallel_map(problems.tables.len(), |t| starts(&problems.tables[t], k, settings, t));
    let mut best: Vec<Option<VectorFit>> = vec![None; problems.tables.len()];
    for tables in rounds(gpu, problems, settings.restarts.max(1))? {
        let runs: Vec<(usize, Vec<f64>)> =
            tables.iter().flat_map(|&t| initial[t].iter().map(move |c| (t, c.clone()))).collect();
        for (t, fit) in lloyd_round(gpu, problems, &tables, runs, settings.max_iter).await? {
            if best[t].as_ref().is_none_or(|b| fit.objective < b.objective) {
                best[t] = Some(fit);
            }
        }
    }
    Ok(best.into_iter().map(|f| f.map_or_else(|| vec![0.0; k * problems.dim], |f| f.centres)).collect())
}

/// Tables in groups whose points, and whose runs' codes and distances, each fit one binding.
fn rounds(gpu: &Gpu, problems: &VectorProblems, restarts: usize) -> Result<Vec<Vec<usize>>> {
    let limit = gpu.max_binding_bytes();
    let mut rounds: Vec<Vec<usize>> = vec![Vec::new()];
    let (mut point_bytes, mut output_bytes) = (0u64, 0u64);
    for (t, table) in problems.tables.iter().enumerate() {
        let (p, o) = ((table.x.len() * 4) as u64, (table.len() * restarts * 4) as u64);
        if p > limit || o > limit {
            return Err(ModelError::Gpu(format!(
                "a vector table of {} vectors needs {} bytes in one buffer but this GPU binds at most {limit}; use a finer granularity",
                table.len(),
                p.max(o)
            )));
        }
        if point_bytes + p > limit || output_bytes + o > limit {
            rounds.push(Vec::new());
            (point_bytes, output_bytes) = (0, 0);
        }
        point_bytes += p;
        output_bytes += o;
        if let Some(round) = rounds.last_mut() {
            round.push(t);
        }
    }
    Ok(rounds.into_iter().filter(|r| !r.is_empty()).collect())
}

/// Lloyd for `runs` (a table and its initial centres each) over the points of `tables`, to the end
/// of every run; returns each run's table and fit.
async fn lloyd_round(
    gpu: &Gpu,
    problems: &VectorProblems,
    tables: &[usize],
    runs: Vec<(usize, Vec<f64>)>,
    max_iter: usize,
) -> Result<Vec<(usize, VectorFit)>> {
    let device = &gpu.setup.device;
    let queue = &gpu.setup.queue;
    let (dim, k) = (problems.dim, problems.entries);
    let kernels = kernels(device).await?;

    // Each table's first point in the uploaded arrays, each run's first output slot.
    let mut first_point = vec![0usize; problems.tables.len()];
    let (mut x, mut w) = (Vec::new(), Vec::new());
    for &t in tables {
        first_point[t] = x.len() / dim;
        let table: &VectorPoints = &problems.tables[t];
        x.extend(table.x.iter().map(|&v| v as f32));
        w.extend(table.w.iter().map(|&v| v as f32));
    }
    let mut slots = Vec::with_capacity(runs.len() + 1);
    slots.push(0usize);
    for (t, _) in &runs {
        slots.push(slots[slots.len() - 1] + problems.tables[*t].len());
    }
    let outputs = slots[runs.len()] as u64 * 4;

    use wgpu::BufferUsages as U;
    let (points, weights, centres, codes, distances, staging) = scoped(device, "allocating vector k-means buffers", || {
        (
            upload(device, "vector kmeans points", f32_bytes(&x), U::STORAGE),
            upload(device, "vector kmeans weights", f32_bytes(&w), U::STORAGE),
            empty_buffer(device, "vector kmeans centres", (runs.len() * k * dim * 4) as u64, U::STORAGE | U::COPY_DST),
            empty_buffer(device, "vector kmeans codes", outputs, U::STORAGE | U::COPY_SRC),
            empty_buffer(device, "vector kmeans distances", outputs, U::STORAGE | U::COPY_SRC),
            empty_buffer(device, "vector kmeans read-back", 2 * outputs, U::MAP_READ | U::COPY_DST),
        )
    })
    .await?;
    drop((x, w));

    let max_dim = device.limits().max_compute_workgroups_per_dimension;
    let mut lloyds: Vec<Lloyd> =
        runs.iter().map(|(t, c)| Lloyd::new(c.clone(), problems.tables[*t].len(), max_iter)).collect();
    let mut done: Vec<Option<VectorFit>> = vec![None; runs.len()];
    while done.iter().any(Option::is_none) {
        // Items: chunks of the live runs' points.
        let mut items: Vec<u32> = Vec::new();
        let mut all_centres: Vec<f32> = Vec::with_capacity(runs.len() * k * dim);
        for (r, (t, _)) in runs.iter().enumerate() {
            all_centres.extend(lloyds[r].centres.iter().map(|&c| c as f32));
            all_centres.resize((r + 1) * k * dim, 0.0);
            if done[r].is_some() {
                continue;
            }
            let n = problems.tables[*t].len();
            for start in (0..n).step_by(WG) {
                let count = WG.min(n - start);
                items.extend([r, first_point[*t] + start, count, slots[r] + start].map(|v| v as u32));
            }
        }
        let n_items = items.len() / 4;
        let item_grid = grid(n_items, max_dim)?;
        let params = [dim as u32, k as u32, n_items as u32, max_dim];
        scoped(device, "assigning vectors to codebook entries", || {
            queue.write_buffer(&centres, 0, f32_bytes(&all_centres));
            let params = upload(device, "vector kmeans params", u32_bytes(&params), U::UNIFORM);
            let items = upload(device, "vector kmeans items", u32_bytes(&items), U::STORAGE);
            let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("vector_kmeans_assign"),
                layout: &kernels.vector_assign.get_bind_group_layout(0),
                entries: &entries(&[&params, &points, &weights, &centres, &items, &codes, &distances]),
            });
            let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("vector kmeans") });
            {
                let mut pass =
                    encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("assign"), timestamp_writes: None });
                pass.set_pipeline(&kernels.vector_assign);
                pass.set_bind_group(0, &bind, &[]);
                pass.dispatch_workgroups(item_grid.0, item_grid.1, 1);
            }
            encoder.copy_buffer_to_buffer(&codes, 0, &staging, 0, outputs);
            encoder.copy_buffer_to_buffer(&distances, 0, &staging, outputs, outputs);
            queue.submit([encoder.finish()]);
        })
        .await?;
        let bytes = read_staging(device, &staging, 2 * outputs).await?;
        let (code_words, dist) = (to_u32(&bytes[..outputs as usize]), to_f32(&bytes[outputs as usize..]));
        for (r, (t, _)) in runs.iter().enumerate() {
            if done[r].is_some() {
                continue;
            }
            let slot = slots[r]..slots[r + 1];
            let assigned: Vec<(usize, f64)> =
                code_words[slot.clone()].iter().zip(&dist[slot]).map(|(&c, &d)| (c as usize, f64::from(d))).collect();
            if assigned.iter().any(|a| a.0 >= k) {
                return Err(ModelError::Gpu(format!("the GPU assigned a vector past its codebook of {k} entries")));
            }
            done[r] = lloyds[r].advance(&problems.tables[*t], &assigned);
        }
    }
    Ok(runs.iter().map(|(t, _)| *t).zip(done.into_iter().flatten()).collect())
}
