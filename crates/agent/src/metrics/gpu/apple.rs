//! The GPUs of a Mac, read from the IORegistry with `ioreg -r -d 1 -w 0 -c IOAccelerator`.
//!
//! Each accelerator is one entry: a `+-o ClassName  <class ClassName, ...>` header, then
//! `"key" = value` lines. What the agent uses:
//!
//! ```text
//! "model" = "Apple M2 Pro"
//! "PerformanceStatistics" = {"Device Utilization %"=14,"In use system memory"=1073741824,...}
//! ```
//!
//! Apple silicon has unified memory, so its memory total is the machine's RAM and its memory
//! used is the GPU's "In use system memory". A discrete GPU of an Intel Mac reports
//! `vramUsedBytes` / `vramFreeBytes` instead, which are used when present. The IORegistry
//! has no GPU temperature for Apple silicon.
//!
//! The parser is plain text processing, tested on every platform; only macOS runs `ioreg`.

use std::ffi::OsStr;
use std::time::Duration;

use llm_router_common::GpuMetrics;

use super::{GpuProbeError, run_tool};

/// What the tool is called in log lines and errors.
pub const TOOL: &str = "ioreg";

const QUERY_ARGS: [&str; 7] = ["-r", "-d", "1", "-w", "0", "-c", "IOAccelerator"];

const MIB: u64 = 1024 * 1024;

/// Runs `ioreg` (`program`) and parses its accelerators; `machine_memory_bytes` is the
/// memory total of a GPU that shares the machine's RAM.
///
/// `Ok(None)` when the tool is not installed.
pub async fn query_ioreg(
    program: &OsStr,
    timeout: Duration,
    machine_memory_bytes: u64,
) -> Result<Option<Vec<GpuMetrics>>, GpuProbeError> {
    let output = run_tool(TOOL, program, &QUERY_ARGS, timeout).await?;
    Ok(output.map(|text| parse_ioreg_accelerators(&text, machine_memory_bytes)))
}

/// One GPU per IORegistry entry in `text`, numbered in the order they appear.
pub fn parse_ioreg_accelerators(text: &str, machine_memory_bytes: u64) -> Vec<GpuMetrics> {
    entries(text)
        .iter()
        .zip(0..)
        .map(|(entry, index)| accelerator_metrics(entry, index, machine_memory_bytes))
        .collect()
}

/// An IORegistry entry: its class from the header and its `"key" = value` lines, raw.
#[derive(Debug, Default)]
struct Entry<'a> {
    class: Option<&'a str>,
    properties: Vec<(&'a str, &'a str)>,
}

impl<'a> Entry<'a> {
    fn property(&self, key: &str) -> Option<&'a str> {
        lookup(&self.properties, key)
    }
}

fn lookup<'a>(pairs: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, value)| *value)
}

fn entries(text: &str) -> Vec<Entry<'_>> {
    let mut entries: Vec<Entry<'_>> = Vec::new();
    for line in text.lines() {
        // Deeper listings draw the tree with `|`; -d 1 does not, but either reads the same.
        let line = line
            .trim_start_matches(|c: char| c == '|' || c.is_whitespace())
            .trim_end();
        if let Some(header) = line.strip_prefix("+-o ") {
            entries.push(Entry {
                class: header_class(header),
                properties: Vec::new(),
            });
        } else if let (Some(entry), Some(property)) = (entries.last_mut(), property_line(line)) {
            entry.properties.push(property);
        }
    }
    entries
}

/// `AGXAcceleratorG14X  <class AGXAcceleratorG14X, id 0x1..., registered, ...>` → the class.
fn header_class(header: &str) -> Option<&str> {
    let after = &header[header.find("<class ")? + "<class ".len()..];
    let end = after.find([',', '>']).unwrap_or(after.len());
    Some(after[..end].trim()).filter(|class| !class.is_empty())
}

/// `"key" = value` → (key, value as written).
fn property_line(line: &str) -> Option<(&str, &str)> {
    let (key, rest) = quoted(line)?;
    let value = rest.trim_start().strip_prefix('=')?.trim();
    Some((key, value))
}

/// A leading `"..."` (backslash escapes skipped over, not decoded) and what follows it.
fn quoted(text: &str) -> Option<(&str, &str)> {
    let body = text.strip_prefix('"')?;
    let mut escaped = false;
    for (at, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some((&body[..at], &body[at + 1..])),
            _ => {}
        }
    }
    None
}

/// `{"a"=1,"VRAM,totalMB"=4096,"b"={"c"=(1,2)}}` → [("a", "1"), ("VRAM,totalMB", "4096"), ("b", "{...}")].
fn parse_dict(text: &str) -> Option<Vec<(&str, &str)>> {
    let mut rest = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut pairs = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            return Some(pairs);
        }
        let (key, after) = quoted(rest)?;
        let after = after.trim_start().strip_prefix('=')?;
        let end = value_end(after);
        pairs.push((key, after[..end].trim()));
        rest = &after[end..];
    }
}

/// Where a dictionary value ends: the first comma outside strings and brackets.
fn value_end(text: &str) -> usize {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (at, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '(' | '<' => depth += 1,
            '}' | ')' | '>' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => return at,
            _ => {}
        }
    }
    text.len()
}

/// `"Apple M2 Pro"` or, as data, `<"Apple M2 Pro">` → the text.
fn string_value(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let raw = raw
        .strip_prefix('<')
        .and_then(|inner| inner.strip_suffix('>'))
        .unwrap_or(raw);
    let (text, rest) = quoted(raw)?;
    // Data values may end in a NUL, written as `\0` or kept raw.
    let text = text.trim_end_matches("\\0").trim_end_matches('\0').trim();
    (rest.trim().is_empty() && !text.is_empty()).then(|| text.to_owned())
}

fn number<T: std::str::FromStr>(raw: Option<&str>) -> Option<T> {
    raw?.trim().parse().ok()
}

fn accelerator_metrics(entry: &Entry<'_>, index: u32, machine_memory_bytes: u64) -> GpuMetrics {
    let class = entry
        .property("IOClass")
        .and_then(string_value)
        .or_else(|| entry.class.map(str::to_owned));
    let model = entry.property("model").and_then(string_value);
    let vendor = vendor_of(model.as_deref(), class.as_deref());
    let stats = entry
        .property("PerformanceStatistics")
        .and_then(parse_dict)
        .unwrap_or_default();
    let stat = |key: &str| lookup(&stats, key);

    let utilization_percent = number::<f32>(stat("Device Utilization %"))
        .or_else(|| number(stat("GPU Activity(%)")))
        .map(|percent| percent.clamp(0.0, 100.0));
    let vram_used = number::<u64>(stat("vramUsedBytes"));
    let (memory_used_bytes, memory_total_bytes) = match vram_used {
        // A discrete GPU with memory of its own.
        Some(used) => {
            let total = number::<u64>(stat("VRAM,totalMB"))
                .map(|mib| mib.saturating_mul(MIB))
                .or_else(|| number::<u64>(stat("vramFreeBytes")).map(|free| free + used));
            (Some(used), total)
        }
        // Unified (or shared) memory: the GPU's share of the machine's RAM.
        None => (
            number(stat("In use system memory")),
            Some(machine_memory_bytes).filter(|&bytes| bytes > 0),
        ),
    };
    GpuMetrics {
        index,
        name: model.or(class).unwrap_or_else(|| "GPU".to_owned()),
        vendor: vendor.map(str::to_owned),
        utilization_percent,
        memory_used_bytes,
        memory_total_bytes,
        temperature_celsius: number(stat("Temperature(C)")),
    }
}

/// Apple's own GPUs are `AGXAccelerator*` with an "Apple M…" model; an Intel Mac's are
/// named after their makers (`IntelAccelerator`, `AMDRadeonX6000_…`, `NVDA…`).
fn vendor_of(model: Option<&str>, class: Option<&str>) -> Option<&'static str> {
    let model = model.unwrap_or_default();
    let class = class.unwrap_or_default();
    if model.starts_with("Apple") || class.starts_with("AGX") {
        Some("Apple")
    } else if class.starts_with("AMD") || model.contains("AMD") || model.contains("Radeon") {
        Some("AMD")
    } else if class.starts_with("Intel") || model.contains("Intel") {
        Some("Intel")
    } else if class.starts_with("NVDA") || class.starts_with("GeForce") || model.contains("NVIDIA")
    {
        Some("NVIDIA")
    } else {
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    /// `ioreg -r -d 1 -w 0 -c IOAccelerator` on a Mac mini with an M2 Pro.
    pub(crate) const M2_PRO: &str = r#"+-o AGXAcceleratorG14X  <class AGXAcceleratorG14X, id 0x1000003c1, registered, matched, active, busy 0 (0 ms), retain 43>
    {
      "IOClass" = "AGXAcceleratorG14X"
      "CFBundleIdentifier" = "com.apple.AGXG14X"
      "IOProviderClass" = "AppleARMIODevice"
      "IOPowerManagement" = {"ChildrenPowerState"=1,"DevicePowerState"=1,"CurrentPowerState"=1,"CapabilityFlags"=32768,"MaxPowerState"=1,"DriverPowerState"=1}
      "IOMatchedAtBoot" = Yes
      "IOReportLegend" = ({"IOReportGroupName"="GPU Stats","IOReportChannels"=((5208208490617451776,"GPU Performance States",12,"GPUPH")),"IOReportChannelInfo"={"IOReportChannelUnit"=0}})
      "AGXParameterBufferMaxSize" = 1409286144
      "IOGLBundleName" = "AppleMetalOpenGLRenderer"
      "model" = "Apple M2 Pro"
      "gpu-core-count" = 19
      "GPUConfigurationVariable" = {"gpu_gen"=14,"num_cores"=19,"num_frags"=19,"num_gps"=4,"num_mgpus"=2}
      "PerformanceStatistics" = {"In use system memory (driver)"=0,"Alloc system memory"=4520411136,"Tiler Utilization %"=11,"recoveryCount"=0,"lastRecoveryTime"=0,"Renderer Utilization %"=12,"TiledSceneBytes"=983040,"SplitSceneCount"=0,"Allocated PB Size"=1179648,"In use system memory"=1073741824,"Device Utilization %"=14}
      "SchedulerState" = {"GPUFWState"=2}
      "MetalPluginName" = "AGXMetalG14X"
      "IOMatchCategory" = "IOAccelerator"
    }
    
"#;

    /// An Intel MacBook Pro: the integrated Intel GPU and a discrete Radeon.
    const INTEL_MAC: &str = r#"+-o IntelAccelerator  <class IntelAccelerator, id 0x100000560, registered, matched, active, busy 0 (1 ms), retain 75>
    {
      "IOClass" = "IntelAccelerator"
      "IOProviderClass" = "IOPCIDevice"
      "PerformanceStatistics" = {"Device Utilization %"=3,"GPU Activity(%)"=3,"In use system memory"=318767104,"Alloc system memory"=1073741824}
      "MetalPluginName" = "AppleIntelKBLGraphicsMTLDriver"
    }
    
+-o AMDRadeonX5000_AMDNavi14GraphicsAccelerator  <class AMDRadeonX5000_AMDNavi14GraphicsAccelerator, id 0x1000005a2, registered, matched, active, busy 0 (0 ms), retain 61>
    {
      "IOClass" = "AMDRadeonX5000_AMDNavi14GraphicsAccelerator"
      "PerformanceStatistics" = {"VRAM,totalMB"=4096,"vramUsedBytes"=536870912,"vramFreeBytes"=3758096384,"GPU Activity(%)"=21,"Temperature(C)"=47}
    }
    
"#;

    #[test]
    fn apple_silicon_reports_its_model_load_and_unified_memory() {
        let gpus = parse_ioreg_accelerators(M2_PRO, 32 * GIB);
        assert_eq!(
            gpus,
            vec![GpuMetrics {
                index: 0,
                name: "Apple M2 Pro".to_owned(),
                vendor: Some("Apple".to_owned()),
                utilization_percent: Some(14.0),
                memory_used_bytes: Some(GIB),
                memory_total_bytes: Some(32 * GIB),
                temperature_celsius: None,
            }]
        );
    }

    #[test]
    fn each_accelerator_of_an_intel_mac_is_a_gpu() {
        let gpus = parse_ioreg_accelerators(INTEL_MAC, 16 * GIB);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].index, 0);
        assert_eq!(gpus[0].name, "IntelAccelerator");
        assert_eq!(gpus[0].vendor.as_deref(), Some("Intel"));
        assert_eq!(gpus[0].utilization_percent, Some(3.0));
        assert_eq!(gpus[0].memory_used_bytes, Some(318767104));
        assert_eq!(gpus[0].memory_total_bytes, Some(16 * GIB));
        assert_eq!(
            gpus[1],
            GpuMetrics {
                index: 1,
                name: "AMDRadeonX5000_AMDNavi14GraphicsAccelerator".to_owned(),
                vendor: Some("AMD".to_owned()),
                utilization_percent: Some(21.0),
                memory_used_bytes: Some(512 * MIB),
                memory_total_bytes: Some(4 * GIB),
                temperature_celsius: Some(47.0),
            }
        );
    }

    #[test]
    fn a_model_written_as_data_and_missing_statistics_are_handled() {
        let text = "+-o AGXAcceleratorG13G  <class AGXAcceleratorG13G, id 0x10000044a, registered>\n\
                    {\n\
                    \x20 \"model\" = <\"Apple M1\\0\">\n\
                    }\n";
        let gpus = parse_ioreg_accelerators(text, 0);
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].name, "Apple M1");
        assert_eq!(gpus[0].vendor.as_deref(), Some("Apple"));
        assert_eq!(gpus[0].utilization_percent, None);
        assert_eq!(gpus[0].memory_used_bytes, None);
        // No RAM size known: no memory total rather than zero.
        assert_eq!(gpus[0].memory_total_bytes, None);
    }

    #[test]
    fn no_accelerators_means_no_gpus() {
        assert!(parse_ioreg_accelerators("", 8 * GIB).is_empty());
        assert!(parse_ioreg_accelerators("\n\n", 8 * GIB).is_empty());
        assert!(parse_ioreg_accelerators("ioreg: no such class\n", 8 * GIB).is_empty());
    }

    #[test]
    fn dictionaries_keep_commas_inside_keys_strings_and_brackets() {
        let pairs =
            parse_dict(r#"{"VRAM,totalMB"=4096,"s"="a,b","n"={"x"=(1,2),"y"=<00ff>},"last"=7}"#)
                .unwrap();
        assert_eq!(
            pairs,
            vec![
                ("VRAM,totalMB", "4096"),
                ("s", r#""a,b""#),
                ("n", r#"{"x"=(1,2),"y"=<00ff>}"#),
                ("last", "7"),
            ]
        );
        assert_eq!(parse_dict("{}"), Some(Vec::new()));
        assert_eq!(parse_dict("not a dictionary"), None);
    }
}
