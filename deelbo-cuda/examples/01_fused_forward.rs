//! One fused forward pass on the GPU: sample w = m + sigma eps for a block of 10M weights, reduce
//! M = ||m - mu||^2, and turn it into v* and KL* through the core. Compares the first few
//! samples with the CPU noise. Prints "skipped: no CUDA driver" on machines without CUDA.
//!
//! Run: `cargo run --release -p deelbo-cuda --example 01_fused_forward`

use deelbo_core::{NoiseKey, normal_at};
use deelbo_cuda::{DeviceParamBlock, DeviceScale, device_or_skip};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(dev) = device_or_skip("01_fused_forward")? else {
        return Ok(());
    };
    let d = 10_000_000usize;
    let pretrained: Vec<f32> = (0..d).map(|i| ((i % 1000) as f32) * 1e-3).collect();
    let mean: Vec<f32> = pretrained.iter().map(|p| p + 0.01).collect();
    let mut block = DeviceParamBlock::new(&dev, &mean, Some(&pretrained), 0)?;
    let sigma = 1e-2f32;
    let key = NoiseKey::for_block_step(7, 0, 0);
    let stats = block.forward(DeviceScale::Isotropic(sigma), key)?;
    let terms = stats.kl_terms()?;
    println!("device: {}", dev.name());
    println!(
        "M = {:.6e}, v* = {:.6e}, KL* = {:.6e}",
        stats.sq_dist,
        terms.optimal_variance(),
        terms.kl_at_optimum()?
    );
    let w = dev.download(block.sample())?;
    for (i, w) in w.iter().enumerate().take(4) {
        let cpu = mean[i] + sigma * normal_at(key, i as u64);
        println!(
            "w[{i}] gpu {w:+.8} cpu {cpu:+.8} same bits: {}",
            w.to_bits() == cpu.to_bits()
        );
    }
    Ok(())
}
