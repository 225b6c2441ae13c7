//! On a machine without a CUDA driver, opening a device is a typed error, not a panic.

use deelbo_cuda::{CudaDevice, CudaError, device_or_skip, driver_available};

#[test]
fn missing_driver_is_a_typed_error() {
    if driver_available() {
        deelbo_cuda::report_skip(
            "skipped: a CUDA driver is present (this test covers machines without one)",
        );
        return;
    }
    match CudaDevice::new(0) {
        Err(CudaError::NoDriver) => {}
        other => panic!("expected CudaError::NoDriver, got {other:?}"),
    }
    let msg = CudaError::NoDriver.to_string();
    assert!(msg.contains("no CUDA driver found"), "{msg}");
    assert!(matches!(device_or_skip("no_driver test"), Ok(None)));
}
