//! NVIDIA GPUs, read with `nvidia-smi`.

use std::ffi::OsStr;
use std::time::Duration;

use llm_router_common::GpuMetrics;

use super::{GpuProbeError, run_tool};

/// The query the agent runs; the parser below expects exactly these columns.
const QUERY_ARGS: [&str; 2] = [
    "--query-gpu=index,name,utilization.gpu,memory.used,memory.total,temperature.gpu",
    "--format=csv,noheader,nounits",
];

/// What the tool is called in log lines and errors, whatever path it was run from.
pub const TOOL: &str = "nvidia-smi";

const MIB: u64 = 1024 * 1024;

/// Runs `nvidia-smi` (`program`, normally found on `PATH`) and parses its answer.
///
/// `Ok(None)` when the tool is not installed (not an error: most machines have no NVIDIA GPU).
/// A run that fails reports, on stdout or stderr, why, e.g. "No devices were found".
pub async fn query_nvidia_smi(
    program: &OsStr,
    timeout: Duration,
) -> Result<Option<Vec<GpuMetrics>>, GpuProbeError> {
    let output = run_tool(TOOL, program, &QUERY_ARGS, timeout).await?;
    Ok(output.map(|text| parse_nvidia_smi_csv(&text)))
}

/// Parses `nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total,temperature.gpu
/// --format=csv,noheader,nounits` output. Readings the card does not support (`[N/A]`,
/// `[Not Supported]`) become `None`; lines that do not have the expected shape are skipped.
pub fn parse_nvidia_smi_csv(text: &str) -> Vec<GpuMetrics> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<GpuMetrics> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if fields.len() < 6 {
        return None;
    }
    // A GPU name may itself contain commas: take the fixed columns from both ends.
    let [index, name @ .., utilization, used, total, temperature] = fields.as_slice() else {
        return None;
    };
    let name = name.join(",");
    Some(GpuMetrics {
        index: index.parse().ok()?,
        name,
        vendor: Some("NVIDIA".to_owned()),
        utilization_percent: reading(utilization),
        memory_used_bytes: reading::<u64>(used).map(|mib| mib.saturating_mul(MIB)),
        memory_total_bytes: reading::<u64>(total).map(|mib| mib.saturating_mul(MIB)),
        temperature_celsius: reading(temperature),
    })
}

fn reading<T: std::str::FromStr>(field: &str) -> Option<T> {
    field.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_reads_every_column_and_converts_mib_to_bytes() {
        let gpus = parse_nvidia_smi_csv(
            "0, NVIDIA H100 80GB HBM3, 37, 1024, 81559, 41\n\
             1, NVIDIA H100 80GB HBM3, 0, 0, 81559, 30\n",
        );
        assert_eq!(gpus.len(), 2);
        assert_eq!(
            gpus[0],
            GpuMetrics {
                index: 0,
                name: "NVIDIA H100 80GB HBM3".to_owned(),
                vendor: Some("NVIDIA".to_owned()),
                utilization_percent: Some(37.0),
                memory_used_bytes: Some(1024 * MIB),
                memory_total_bytes: Some(81559 * MIB),
                temperature_celsius: Some(41.0),
            }
        );
        assert_eq!(gpus[1].index, 1);
        assert_eq!(gpus[1].utilization_percent, Some(0.0));
    }

    #[test]
    fn parser_turns_not_available_fields_into_none() {
        let gpus = parse_nvidia_smi_csv(
            "0, NVIDIA GeForce GTX 1050, [N/A], 512, 4096, [N/A]\n\
             1, Tesla K80, [Not Supported], [Not Supported], 11441, 35\n",
        );
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].utilization_percent, None);
        assert_eq!(gpus[0].memory_used_bytes, Some(512 * MIB));
        assert_eq!(gpus[0].temperature_celsius, None);
        assert_eq!(gpus[1].utilization_percent, None);
        assert_eq!(gpus[1].memory_used_bytes, None);
        assert_eq!(gpus[1].memory_total_bytes, Some(11441 * MIB));
        assert_eq!(gpus[1].temperature_celsius, Some(35.0));
    }

    #[test]
    fn parser_keeps_commas_inside_a_gpu_name() {
        let gpus = parse_nvidia_smi_csv("3, Odd, Name, 5, 1, 2, 60\n");
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].index, 3);
        assert_eq!(gpus[0].name, "Odd,Name");
        assert_eq!(gpus[0].utilization_percent, Some(5.0));
        assert_eq!(gpus[0].temperature_celsius, Some(60.0));
    }

    #[test]
    fn parser_skips_blank_and_malformed_lines() {
        let text = "\n\
                    No devices were found\n\
                    x, NVIDIA A100, 1, 2, 3, 4\n\
                    0, NVIDIA A100, 1, 2, 3\n\
                    2, NVIDIA A100-SXM4-40GB, 99, 40000, 40960, 70\r\n";
        let gpus = parse_nvidia_smi_csv(text);
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].index, 2);
        assert_eq!(gpus[0].name, "NVIDIA A100-SXM4-40GB");
        assert_eq!(gpus[0].temperature_celsius, Some(70.0));
    }
}
