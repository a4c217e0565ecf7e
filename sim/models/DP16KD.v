// Simulation model of the ECP5 dual-port block RAM (DP16KD) for the subset of its configuration
// that hw/bram.py instantiates: 1024 x 18 on both ports, port A writing (WEA, byte enables on
// ADA1/ADA0), port B reading, the read data either straight from the array (REGMODE_B "NOREG": one
// cycle after the address) or through the block's output register (REGMODE_B "OUTREG": two
// cycles, the register enabled by OCEB). Written from the port and register description in
// Lattice's ECP5 memory usage guide (TN1264; yosys ships only a black box); anything else this
// model does not cover stops the simulation at time 0. A read of the word written in the same
// cycle is undefined on the device; the model returns the old word.
module DP16KD(
    input DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0,
    input ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0,
    input CEA, OCEA, CLKA, WEA, RSTA, CSA2, CSA1, CSA0,
    output DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0,
    input DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
    input ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0,
    input CEB, OCEB, CLKB, WEB, RSTB, CSB2, CSB1, CSB0,
    output DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0
);
    parameter DATA_WIDTH_A = 18;
    parameter DATA_WIDTH_B = 18;
    parameter REGMODE_A = "NOREG";
    parameter REGMODE_B = "NOREG";
    parameter RESETMODE = "SYNC";
    parameter ASYNC_RESET_RELEASE = "SYNC";
    parameter CSDECODE_A = "0b000";
    parameter CSDECODE_B = "0b000";
    parameter WRITEMODE_A = "NORMAL";
    parameter WRITEMODE_B = "NORMAL";
    parameter GSR = "ENABLED";

    localparam OUTREG = REGMODE_B == "OUTREG";

    initial begin
        if (DATA_WIDTH_A != 18 || DATA_WIDTH_B != 18 || REGMODE_A != "NOREG"
                || (REGMODE_B != "NOREG" && !OUTREG) || CSDECODE_A != "0b000"
                || CSDECODE_B != "0b000" || RESETMODE != "SYNC") begin
            $display("DP16KD model: configuration not covered");
            $finish;
        end
    end

    reg [17:0] mem [0:1023];
    wire [9:0] wa = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4};
    wire [9:0] ra = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4};
    wire [17:0] di = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
    wire selected_a = {CSA2, CSA1, CSA0} == 3'b000;
    wire selected_b = {CSB2, CSB1, CSB0} == 3'b000;
    always @(posedge CLKA) if (CEA && WEA && selected_a) begin
        if (ADA0) mem[wa][8:0] <= di[8:0];
        if (ADA1) mem[wa][17:9] <= di[17:9];
    end
    always @(posedge CLKB) if (CEB && WEB) begin
        $display("DP16KD model: port B writes not covered");
        $finish;
    end
    reg [17:0] rd_q = 0, out_q = 0;
    always @(posedge CLKB) if (RSTB) rd_q <= 0; else if (CEB && selected_b) rd_q <= mem[ra];
    always @(posedge CLKB) if (RSTB) out_q <= 0; else if (OCEB) out_q <= rd_q;
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = OUTREG ? out_q : rd_q;
    assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = 18'b0;
endmodule
