import { describe, expect, it } from "vitest";

import { bytes, count, duration, money, plural, rate, relative, trainedOn } from "./format";

describe("format", () => {
  it("reads sizes in the unit that fits", () => {
    expect(bytes(812)).toBe("812 B");
    expect(bytes(4300)).toBe("4.2 KB");
    expect(bytes(33_030_144)).toBe("31.5 MB");
    expect(bytes(1_288_490_189)).toBe("1.20 GB");
    expect(bytes(-1)).toBe("–");
    expect(rate(2_411_724)).toBe("2.3 MB/s");
    expect(rate(0)).toBe("–");
  });

  it("reads durations as people say them", () => {
    expect(duration(45)).toBe("45 s");
    expect(duration(200)).toBe("3 min 20 s");
    expect(duration(180)).toBe("3 min");
    expect(duration(7500)).toBe("2 h 5 min");
    expect(duration(null)).toBe("–");
  });

  it("says where a job trained", () => {
    expect(trainedOn("ray")).toBe("a Ray cluster");
    expect(trainedOn("candle", 1)).toBe("the worker's CPU (candle)");
    expect(trainedOn("ray", 2)).toBe("a Ray cluster, attempt 2");
    expect(trainedOn("some-new-backend")).toBe("some-new-backend");
    expect(trainedOn(undefined)).toBe("–");
  });

  it("reads counts, money and plurals", () => {
    expect(count(1234567)).toBe("1,234,567");
    expect(money(3.406)).toBe("$3.41 USD");
    expect(plural(1, "error")).toBe("1 error");
    expect(plural(3, "error")).toBe("3 errors");
    expect(plural(2, "match", "matches")).toBe("2 matches");
  });

  it("reads times relative to now", () => {
    const now = new Date("2026-12-07T12:00:00Z");
    expect(relative("2026-12-07T11:59:40Z", now)).toBe("just now");
    expect(relative("2026-12-07T11:58:00Z", now)).toBe("2 min ago");
    expect(relative("2026-12-07T09:00:00Z", now)).toBe("3 h ago");
    expect(relative("2026-12-06T10:00:00Z", now)).toBe("yesterday");
    expect(relative("2026-12-01T12:00:00Z", now)).toBe("6 days ago");
    expect(relative("2026-09-01T12:00:00Z", now)).toBe("2026-09-01");
    expect(relative(null, now)).toBe("never");
  });
});
